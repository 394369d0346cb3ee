"""The package's shape: no import cycles (even through imports inside functions), one rule per fact."""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "auditor"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports anywhere in it, but under `if TYPE_CHECKING:` (never run)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def test_no_import_cycles():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(paths)) for name, path in paths.items()}
    cycles: list[list[str]] = []

    def visit(name: str, stack: list[str]) -> None:
        for dep in sorted(graph[name]):
            if dep in stack:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in done:
                visit(dep, [*stack, dep])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    # A package's __init__ re-exporting its own modules is not a cycle of meaning; anything else is.
    nested = lambda a, b: a.startswith(b + ".") or b.startswith(a + ".")  # noqa: E731
    real = [c for c in cycles if not any(nested(a, b) for a, b in itertools.pairwise(c))]
    assert real == []
    assert graph["auditor.scheduler.summary"] and "auditor.scheduler.runner" not in graph["auditor.scheduler.summary"]


IDS = [
    "meta-llama/Llama-2-7b-hf",
    "org/a.b_c-d",
    "a/b",
    "org/" + "x" * 96,
    "org/" + "x" * 97,
    "org/naïve",
    "org/a--b",
    "org/a..b",
    "org/-a",
    "org/a-",
    "org/a.",
    "org/model.git",
    "org/",
    "/name",
    "org/a/b",
    "org name/x",
    "gpt2",
]


@pytest.mark.parametrize("text", IDS)
def test_one_hub_id_rule_agrees_with_the_hub_client(text):
    """auditor.ids decides as huggingface_hub's own validate_repo_id does, in ASCII only."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from auditor.ids import is_hub_id, is_model_id

    try:
        validate_repo_id(text)
        hub = text.isascii()
    except HFValidationError:
        hub = False
    assert is_hub_id(text) == hub
    assert is_model_id(text) == (hub and "/" in text)


def test_every_schema_uses_the_one_model_id_pattern():
    import msgspec

    from auditor.ids import MODEL_ID
    from auditor.scheduler.queue import Item
    from auditor.scheduler.requestfiles import AuditRequest

    index = json.loads((PACKAGE / "index" / "schema.json").read_text())
    assert index["properties"]["model"]["pattern"] == MODEL_ID
    for model in (Item, AuditRequest):
        schema = msgspec.json.schema_components([model])[1][model.__name__]
        assert schema["properties"]["model"]["pattern"] == MODEL_ID
    sources = "".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "ids.py")
    assert "[\\\\w.-]" not in sources and "validate_repo_id" not in sources  # no second, different rule


def test_the_cli_knows_the_audit_extra_as_pyproject_declares_it():
    """The modules whose absence makes the CLI say "pip install 'superweight-index[audit]'" are that extra."""
    import re

    import tomllib

    from auditor.cli import AUDIT_MODULES

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~;\[ ]", r)[0].lower().replace("-", "_") for r in requirements}

    assert names(project["optional-dependencies"]["audit"]) == AUDIT_MODULES
    base = names(project["dependencies"])
    assert not base & AUDIT_MODULES and "torch" not in base
