"""YAML that cannot hurt: a strict reader for untrusted files and a canonical writer.

The reader (`load`) accepts plain data only. Before libyaml sees a byte it bounds the file's size, its flow
nesting and its indentation (libyaml recurses in C and crashes the process on deep nesting). After
composing, it refuses aliases (a "billion laughs" bomb is a handful of nodes shared many times over), any tag
but the plain JSON-like ones (so no `!!python/object`, no `!!binary`, and no unquoted timestamps turning into
dates), duplicate keys (PyYAML would keep the last one silently), and documents with too many nodes.

The writer (`dump`) is deterministic: keys in the order given, scalar lists in flow style, and every string
quoted that a YAML 1.1 or 1.2 parser could read as something else (a sha made of digits, `1.0`, `yes`, `null`,
a date), so rewriting unchanged data gives an identical file.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import AuditorError

MAX_BYTES = 4 * 1024 * 1024
MAX_FLOW_DEPTH = 32
MAX_INDENT = 128
MAX_NODES = 500_000
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class YamlError(AuditorError):
    """A YAML file is malformed or uses features that plain data never needs."""

    code = "bad_yaml"


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
        node = loader.get_single_node()
        if node is None:
            raise YamlError(f"{where}: the file is empty")
        check_nodes(node, where)
        return construct(node, loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise YamlError(f"{where}{line}: {problem}") from None
    finally:
        loader.dispose()


def precheck(text: str, where: str) -> None:
    """Bound nesting before parsing: brackets (counted even inside quotes: conservative) and indentation."""
    depth = deepest = 0
    for m in re.finditer(r"[\[\]{}]", text):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_FLOW_DEPTH:
        raise YamlError(f"{where}: nested deeper than {MAX_FLOW_DEPTH} levels")
    if re.search(rf"^[ \t]{{{MAX_INDENT + 1},}}", text, re.MULTILINE):
        raise YamlError(f"{where}: indented more than {MAX_INDENT} columns")


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
        if node.tag not in PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            hint = ": quote it" if tag == "!!timestamp" else ""
            raise YamlError(f"{where} (line {node.start_mark.line + 1}): {tag} values are not allowed{hint}")
        if isinstance(node, yaml.MappingNode):
            keys = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        line = key.start_mark.line + 1
                        raise YamlError(f"{where} (line {line}): duplicate key {key.value!r}")
                    keys.add(key.value)
                stack += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


SCALARS = {"tag:yaml.org,2002:str": str, "tag:yaml.org,2002:int": int, "tag:yaml.org,2002:float": float}
CONSTANTS = {
    "null": None,
    "Null": None,
    "NULL": None,
    "~": None,
    "": None,
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
}


def construct(node: yaml.Node, loader: yaml.BaseLoader) -> Any:
    """Build plain data from checked nodes, about twice as fast as PyYAML's generic constructor.

    Tags were already resolved by PyYAML; any scalar the fast path cannot read exactly as PyYAML would
    (`0x1f`, `.inf`, `1_000`, sexagesimal...) goes to PyYAML's own constructor, so typing is identical.
    """
    if isinstance(node, yaml.MappingNode):
        return {construct(k, loader): construct(v, loader) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [construct(v, loader) for v in node.value]
    kind = SCALARS.get(node.tag)
    if kind is str:
        return node.value
    if kind is not None:
        digits = node.value.lstrip("-").replace(".", "", kind is float)
        if digits.isdigit() and (kind is float or digits == "0" or digits[0] != "0"):  # YAML 1.1: 010 is octal
            return kind(node.value)
    elif node.value in CONSTANTS and node.tag != "tag:yaml.org,2002:str":
        return CONSTANTS[node.value]
    return loader.construct_object(node, deep=True)


# -- writing --------------------------------------------------------------------------------------

# Strings that some YAML parser reads as a number, boolean, null or date: quote them.
AMBIGUOUS = re.compile(
    r"^(?:[-+.]?[0-9].*|\.(?:inf|nan)|[-+]\.inf|~|null|true|false|yes|no|on|off|y|n|)$", re.IGNORECASE
)


class IndexDumper(Dumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # repeated objects are written out again: the reader refuses aliases

    def represent_str(self, data: str) -> yaml.ScalarNode:
        style = "'" if AMBIGUOUS.match(data) else None
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
