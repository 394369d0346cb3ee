"""YAML that cannot hurt: a strict reader for untrusted files and a canonical writer.

The reader (`load`) accepts plain data only. Before libyaml sees a byte it bounds the file's size and its
nesting: flow brackets, indentation, and compact block nesting (`- - - x`) (libyaml recurses in C and
crashes the process on deep nesting). Before a node is composed, libyaml's parser, which keeps nothing of
what it reads, bounds the number of values (4 MB of `- - - - x` lines are 1.6 million values: composing
them took 22 s and 750 MB before they were counted). After composing, it refuses aliases (a "billion
laughs" bomb is a handful of nodes shared many times over), any tag but the plain JSON-like ones (so no
`!!python/object`, no `!!binary`, and no unquoted timestamps turning into dates), keys that are not strings,
duplicate keys (PyYAML would keep the last one silently), documents with too many nodes, and numbers and
booleans that YAML 1.1 and 1.2 read differently (`012`, `0x1f`, `1_000`, `1:20`, `.inf`, `yes`, `on`):
another tool reading the file must see the same data.

The writer (`dump`) is deterministic: keys in the order given, scalar lists in flow style, and every string
quoted that a YAML 1.1 or 1.2 parser could read as something else (a sha made of digits, `1.0`, `yes`, `null`,
a date), so rewriting unchanged data gives an identical file.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import AuditorError, Failure

MAX_BYTES = 4 * 1024 * 1024
MAX_FLOW_DEPTH = 32
MAX_INDENT = 128
MAX_COMPACT = 8  # `- - x`: block levels opened on one line
MAX_NODES = 500_000
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}
STR, INT, FLOAT, BOOL, SEQ, MAP = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "seq", "map"))
# Numbers and booleans as every YAML version reads them alike (and as the writer writes them).
PLAIN_SCALARS = {
    INT: re.compile(r"-?(?:0|[1-9][0-9]*)"),
    FLOAT: re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]*(?:[eE][-+]?[0-9]+)?"),
    BOOL: re.compile(r"true|false|True|False|TRUE|FALSE"),
}

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class YamlError(AuditorError):
    """A YAML file is malformed or uses features that plain data never needs."""

    code = Failure.BAD_YAML


def load(text: str, where: str, *, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one YAML document of plain data (str, int, float, bool, null, lists, mappings).

    Raises:
        YamlError: naming `where`, the line when known, and what is wrong.
    """
    if len(text) > max_bytes:
        raise YamlError(f"{where}: {len(text):,} bytes, over the {max_bytes:,}-byte limit")
    precheck(text, where)
    loader = Loader(text)
    try:
        if len(text) > MAX_NODES // 2 and too_many_values(text):  # a value takes a character, nearly: shorter is fine
            raise YamlError(f"{where}: more than {MAX_NODES:,} values")
        node = loader.get_single_node()
        if node is None:
            raise YamlError(f"{where}: the file is empty")
        check_nodes(node, where)
        return construct(node)
    except RecursionError as e:  # the prechecks bound nesting well below this: a last line of defence
        raise YamlError(f"{where}: nested too deeply") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise YamlError(f"{where}{line}: {problem}") from e
    finally:
        loader.dispose()


def precheck(text: str, where: str) -> None:
    """Bound nesting before parsing: brackets (counted even inside quotes: conservative), indentation, and
    block levels opened on one line. A block level takes a column of its own, so these bound the depth."""
    if flow_depth(text) > MAX_FLOW_DEPTH:
        raise YamlError(f"{where}: nested deeper than {MAX_FLOW_DEPTH} levels")
    if re.search(rf"^[ \t]{{{MAX_INDENT + 1},}}", text, re.MULTILINE):
        raise YamlError(f"{where}: indented more than {MAX_INDENT} columns")
    if re.search(rf"^[ \t]*(?:[-?:][ \t]+){{{MAX_COMPACT + 1},}}", text, re.MULTILINE):
        raise YamlError(f"{where}: more than {MAX_COMPACT} levels opened on one line")


def flow_depth(text: str) -> int:
    """How deep brackets nest, counted even inside quotes (conservative); when there are no more brackets
    than the limit, just their count, which is as good for comparing with it and far cheaper."""
    opening = text.count("[") + text.count("{")
    if opening <= MAX_FLOW_DEPTH:
        return opening
    depth = deepest = 0
    for bracket in re.sub(r"[^\[\]{}]+", "", text):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def too_many_values(text: str) -> bool:
    """Whether the text holds more than MAX_NODES values, judged from libyaml's events, which cost nothing
    to keep (nodes cost about 400 bytes and 15 µs each): a scalar or alias for each value, a start and an
    end for each list or mapping, and four for the stream and the document (three more for each further
    document, which is refused anyway). The C parser counts them all
    without making a Python object (0.3 s for 4 MB); only a text in between the bounds that count gives
    has its values counted one by one, and that stops at the limit (about a second at most).

    Raises:
        yaml.YAMLError: the text is not YAML.
    """
    loader = Loader(text)
    try:
        raw_parse = getattr(loader, "raw_parse", None)  # libyaml's; pure-Python PyYAML has none
        events = raw_parse() - 4 if raw_parse is not None else 2 * MAX_NODES
        if events <= MAX_NODES or events > 2 * MAX_NODES:  # every value is one event or two at most
            return events > MAX_NODES
        loader.dispose()
        loader = Loader(text)
        values = 0
        while loader.check_event():
            if isinstance(loader.get_event(), yaml.NodeEvent):
                values += 1
                if values > MAX_NODES:
                    return True
        return False
    finally:
        loader.dispose()


def check_nodes(root: yaml.Node, where: str) -> None:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise YamlError(f"{where} (line {node.start_mark.line + 1}): aliases (*name) are not allowed")
        seen.add(id(node))
        if len(seen) > MAX_NODES:
            raise YamlError(f"{where}: more than {MAX_NODES:,} values")
        line = node.start_mark.line + 1
        if node.tag not in PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            hint = ": quote it" if tag == "!!timestamp" else ""
            raise YamlError(f"{where} (line {line}): {tag} values are not allowed{hint}")
        kind = yaml.SequenceNode if node.tag == SEQ else yaml.MappingNode if node.tag == MAP else yaml.ScalarNode
        if not isinstance(node, kind):  # `!!int [1, 2]`, `!!str {a: 1}`: a tag that lies about its value
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            what = {yaml.SequenceNode: "list", yaml.MappingNode: "mapping"}.get(type(node), "single value")
            raise YamlError(f"{where} (line {line}): a {tag} tag on a {what} is not plain data")
        plain = PLAIN_SCALARS.get(node.tag)
        if plain is not None and not plain.fullmatch(node.value):
            if node.tag == FLOAT and node.value.lstrip("+-").lower() in (".inf", ".nan"):
                raise YamlError(f"{where} (line {line}): {node.value} is not a finite number")
            kind = "boolean" if node.tag == BOOL else "number"
            raise YamlError(
                f"{where} (line {line}): {node.value!r} reads differently in YAML 1.1 and 1.2: "
                f"quote it if it is text, else write a plain {kind}"
            )
        if isinstance(node, yaml.MappingNode):
            keys = set()
            for key, value in node.value:
                if key.tag != STR:
                    raise YamlError(f"{where} (line {key.start_mark.line + 1}): keys must be strings (quote it)")
                if key.value in keys:
                    raise YamlError(f"{where} (line {key.start_mark.line + 1}): duplicate key {key.value!r}")
                keys.add(key.value)
                stack += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


SCALARS = {STR: str, INT: int, FLOAT: float, BOOL: lambda value: value.lower() == "true"}


def construct(node: yaml.Node) -> Any:
    """Build plain data from checked nodes, about twice as fast as PyYAML's generic constructor (tags were
    resolved by PyYAML, and `check_nodes` left only plain forms: each reads the same in Python)."""
    if isinstance(node, yaml.MappingNode):
        return {key.value: construct(value) for key, value in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [construct(value) for value in node.value]
    kind = SCALARS.get(node.tag)
    return None if kind is None else kind(node.value)  # the only other plain tag is null


# -- writing --------------------------------------------------------------------------------------

# Strings that some YAML parser reads as a number, boolean, null or date: quote them.
AMBIGUOUS = re.compile(
    r"^(?:[-+.]?[0-9].*|\.(?:inf|nan)|[-+]\.inf|~|null|true|false|yes|no|on|off|y|n|)$", re.IGNORECASE
)


class IndexDumper(Dumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # repeated objects are written out again: the reader refuses aliases

    def represent_str(self, data: str) -> yaml.ScalarNode:
        # A text of several lines goes on one line, its breaks escaped: a continuation line could otherwise
        # look to the reader's nesting check like block levels opened on one line ("- - - -").
        style = '"' if "\n" in data else "'" if AMBIGUOUS.match(data) else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    def represent_list(self, data: list | tuple) -> yaml.SequenceNode:
        flow = all(not isinstance(v, (dict, list, tuple)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


IndexDumper.add_representer(str, IndexDumper.represent_str)
IndexDumper.add_multi_representer(str, IndexDumper.represent_str)  # str subclasses (torch versions)
IndexDumper.add_representer(list, IndexDumper.represent_list)
IndexDumper.add_representer(tuple, IndexDumper.represent_list)


def dump(data: Any) -> str:
    """Canonical YAML for plain data: the same data always gives the same text."""
    return yaml.dump(
        data, Dumper=IndexDumper, sort_keys=False, allow_unicode=True, width=1 << 16, default_flow_style=False
    )
