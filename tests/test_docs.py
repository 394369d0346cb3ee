"""The docs match the code: every command and option the README and the workflows show exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from auditor.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", ROOT / "requests" / "README.md", *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]


def documented_commands() -> list[tuple[str, str]]:
    """(source, command line) for each `superweight ...` the docs show."""
    found = []
    for path in SOURCES:
        for match in re.finditer(r"superweight ((?:[a-z]+ ?){1,2})([^`\n|&>;]*)", path.read_text()):
            found.append((path.name, "superweight " + match.group(1) + match.group(2)))
    return found


def subcommand(parser, words: list[str]):
    """Walk the parser tree along `words`; return the deepest parser and the words left."""
    while words:
        actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not actions or words[0] not in actions[0].choices:
            break
        parser, words = actions[0].choices[words[0]], words[1:]
    return parser, words


@pytest.mark.parametrize(("source", "line"), documented_commands())
def test_documented_command_exists(source, line):
    words = shlex.split(line.replace("[", " ").replace("]", " ").replace("\\", ""))[1:]
    parser, rest = subcommand(build_parser(), words)
    assert parser.prog != "superweight", f"{source}: {line}: no such command"
    options = {s for a in parser._actions for s in a.option_strings}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{source}: {line}: {parser.prog} has no {word}"


def test_every_command_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    top = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in top.choices.items():
        inner = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        names = [f"{name} {n}" for n in inner[0].choices] if inner else [name]
        for full in names:
            assert f"superweight {full}" in readme, f"superweight {full} is not in the README"
