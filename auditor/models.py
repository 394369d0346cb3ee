"""The base of every saved or exchanged data shape, and the constrained types they share.

Each shape (an index record, a queue item, a request, the config, a run manifest, the JSON of
`detect`/`audit`) is one `msgspec.Struct`, written once next to the code that uses it. From it follow:
validation of untrusted data (`from_data`: types, patterns, bounds, unknown fields refused), the plain
data written to YAML and JSON (`to_data`), and the JSON Schemas published for other tools (`schema_of`).
msgspec was chosen over pydantic v2 by measurement (`benchmarks/bench_index.py`): converting 10,000 index
records takes about a fifth of a second, half pydantic's time, and the models read as plain annotations.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from .ids import MODEL_ID

T = TypeVar("T")


class Model(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A typed, immutable record. Fields left at their default (None, mostly) are not written out.

    Untracked by the garbage collector (records never form reference cycles): loading 10,000 index files
    makes millions of objects, and the collector's passes over them would otherwise cost more than the
    parsing."""


# Shared field types: the pattern (or bound) is part of the type, so the schema and validation follow.
Count = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(ge=1)]
ModelId = Annotated[str, Meta(pattern=MODEL_ID, description="A Hub repo id, org/name.")]
Sha40 = Annotated[str, Meta(pattern="^[0-9a-f]{40}$", description="A git commit sha, quoted.")]
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
Date = Annotated[
    str,
    Meta(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z)?$",
        description="A date or a UTC time, ISO 8601, quoted.",
    ),
]
Time = Annotated[
    str, Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$")
]
Version = Annotated[str, Meta(min_length=1, max_length=64)]
DottedName = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$",
        max_length=200,
        description="A module or tensor name as transformers names it (model.layers.2.mlp.down_proj).",
    ),
]
WeightFile = Annotated[str, Meta(pattern=r"^[^/]+\.safetensors$")]
Url = Annotated[str, Meta(pattern='^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^\\s"<>\\\\^`{|}]*)?$', max_length=500)]


def Text(limit: int) -> Any:
    """A string of at most `limit` characters."""
    return Annotated[str, Meta(max_length=limit)]


# The patterns above in words, for error messages: keyed by each type's own pattern string.
PATTERN_WORDS = {
    constrained.__metadata__[0].pattern: words
    for constrained, words in (
        (Sha40, "a 40-character commit sha"),
        (Sha256, "a 64-character sha256"),
        (ModelId, "a Hub model id (org/name)"),
        (DottedName, "a dotted module or tensor name (model.layers.2.mlp.down_proj)"),
        (Url, "an https:// URL (no spaces, quotes or brackets)"),
        (WeightFile, "a weight file name (*.safetensors)"),
        (Date, "a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MM:SSZ)"),
        (Time, "a time (YYYY-MM-DDTHH:MM:SSZ)"),
    )
}


class DataError(ValueError):
    """Data does not fit its model: `where` (a dotted path, `file` for the whole) and `what`."""

    def __init__(self, where: str, what: str):
        self.where, self.what = where, what
        super().__init__(f"{where}: {what}")


def from_data(data: Any, cls: type[T]) -> T:
    """Validate plain data (from YAML or JSON) as `cls`. No coercion: `"5"` is not an int.

    Raises:
        DataError: the first thing wrong, with where it is, in words.
    """
    try:
        return msgspec.convert(data, cls, strict=True)
    except msgspec.ValidationError as e:
        raise data_error(str(e)) from e


def data_error(message: str) -> DataError:
    """msgspec's "Expected `str` matching regex '^..$', got `5` - at `$.items[0].revision`", in words."""
    what, _, at = message.partition(" - at `")
    where = at.rstrip("`").removeprefix("$").lstrip(".") or "file"
    if m := re.fullmatch(r"Expected `str` matching regex '(.*)'", what):
        pattern = m[1].replace("\\\\", "\\")  # msgspec shows the pattern as a repr
        what = f"not {PATTERN_WORDS.get(pattern, 'in the expected form')}"
    what = what.replace("`", "")
    what = what[0].lower() + what[1:] if what else what
    if what.startswith("object contains unknown field"):
        what = what.replace("object contains unknown field", "unknown field")
    elif what.startswith("object missing required field"):
        what = what.replace("object missing required field", "missing required field")
    return DataError(where, what)


def to_data(obj: Any) -> Any:
    """A model (or a list or dict of them) as plain JSON-ready data: tuples as lists, enums as their values,
    inf and NaN as None (a diverged measurement is stored as null, never as a number no format can hold)."""
    return msgspec.json.decode(msgspec.json.encode(obj))


def to_full_data(obj: Any) -> Any:
    """Like `to_data`, with every field written, those at their default too: the JSON other tools read
    (`superweight detect --json`) keeps the same keys whatever the values."""
    if isinstance(obj, msgspec.Struct):
        return {name: to_full_data(getattr(obj, name)) for name in obj.__struct_fields__}
    if isinstance(obj, (list, tuple)):
        return [to_full_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_full_data(v) for k, v in obj.items()}
    return to_data(obj)


def schema_of(cls: Any, *, title: str, description: str = "", schema_id: str | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a model, as published.

    Three things differ from msgspec's own output. A struct that always writes every field (`omit_defaults`
    off) requires them all. A tagged union is written as `if source is X then X's schema`, and `X | None`
    as X's schema with `null` among its types, rather than `anyOf`: a validator then names what is wrong
    inside a record or a value, not just "no variant matched".
    """
    schema = msgspec.json.schema(cls, ref_template="#/$defs/{name}")
    defs = schema["$defs"]
    for name, node in defs.items():
        struct = _structs(cls).get(name)
        if struct is not None and not struct.__struct_config__.omit_defaults:
            node["required"] = list(node["properties"])
    root = defs.pop(schema["$ref"].rsplit("/", 1)[1])
    out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if schema_id:
        out["$id"] = schema_id
    out.update(title=title, description=description or root.get("description", ""))
    out.update({k: v for k, v in root.items() if k not in ("title", "description")})
    if defs:
        out["$defs"] = dict(sorted(defs.items()))
    return _if_then(out)


def _structs(cls: Any) -> dict[str, Any]:
    """Every struct type reachable from `cls`, by name."""
    found: dict[str, Any] = {}

    def visit(info: Any) -> None:
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls.__name__ in found:
                return
            found[info.cls.__name__] = info.cls
            for f in info.fields:
                visit(f.type)
        for inner in ("item_type", "key_type", "value_type"):
            if hasattr(info, inner):
                visit(getattr(info, inner))
        for many in ("types", "item_types"):
            for t in getattr(info, many, ()):
                visit(t)

    visit(msgspec.inspect.type_info(cls))
    return found


def _if_then(node: Any) -> Any:
    if isinstance(node, list):
        return [_if_then(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _if_then(v) for k, v in node.items()}
    options = node.get("anyOf", [])
    if len(options) == 2 and {"type": "null"} in options:  # `X | None`: one schema that also takes null
        (inner,) = (o for o in options if o != {"type": "null"})
        if isinstance(inner.get("type"), str):
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return {**inner, "type": [inner["type"], "null"], **rest}
    if "discriminator" in node and "anyOf" in node:
        tag, mapping = node["discriminator"]["propertyName"], node["discriminator"]["mapping"]
        return {
            "type": "object",
            "required": [tag],
            "properties": {tag: {"enum": list(mapping)}},
            "allOf": [
                {"if": {"properties": {tag: {"const": value}}}, "then": {"$ref": ref}} for value, ref in mapping.items()
            ],
        }
    return node
