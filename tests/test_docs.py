"""The docs match the code: every command and option the README and the workflows show exists."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.cli import build_parser
from auditor.web.check import check_site

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


def quickstart() -> dict[str, str]:
    """The README's quick-start blocks, as .ci/run reads them."""
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / ".ci" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.blocks()


def test_ci_runs_the_quick_start_install_and_test_blocks_verbatim():
    blocks, ci = quickstart(), (ROOT / ".ci" / "run").read_text()
    assert 'eval "$(python3 .ci/quickstart.py install)"' in ci
    assert 'eval "$(python3 .ci/quickstart.py tests)"' in ci
    assert "pip install torch==2.13.0" in blocks["install"]  # first, so that no CUDA build is downloaded
    assert blocks["tests"] == "python -m pytest\n"


def test_the_quick_start_runs_verbatim_on_a_fresh_shell(tmp_path):
    """The main-job blocks, in order, in one shell, in an empty directory, with no HF_* or SUPERWEIGHT_* set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SUPERWEIGHT_"))}
    env.update(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")

    proc = subprocess.run(
        ["bash", "-e", "-c", quickstart()["main"]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Verdict: confirmed" in proc.stdout
    assert "\nwrote sw-demo/index/demo/tiny-llama.yaml\n" in proc.stdout  # audit, on stdout
    assert "  layer 1 [7, 33]  value -2" in proc.stdout  # index lookup found it through SUPERWEIGHT_INDEX
    assert "1 file(s), 1 record(s): all valid" in proc.stderr  # index validate, likewise
    site = tmp_path / "sw-demo" / "site"
    assert (site / "models" / "demo" / "tiny-llama" / "index.html").is_file() and check_site(site) == []


# Each command with --json, and the test that parses its stdout as JSON and nothing else.
JSON_COMMANDS = {
    "detect": "test_cli.py::test_console_script_json_on_stdout_progress_on_stderr",
    "audit": "test_cli.py::test_audit_json_is_alone_on_stdout_and_the_record_path_is_reported",
    "index lookup": "test_cli_index.py::test_lookup_text_and_json",
    "quantize-impact": "test_quantize.py::test_quantize_impact_on_the_command_line",
    "check-gguf": "test_derivatives.py::test_the_commands_print_json_and_fail_in_one_line",
    "screen": "test_derivatives.py::test_the_commands_print_json_and_fail_in_one_line",
    "discover": "test_scheduler.py::test_discover_command_json",
    "request validate": "test_scheduler.py::test_request_validate_command",
}


def test_every_json_flag_has_a_test_that_parses_its_output():
    parser, found = build_parser(), set()
    top = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in top.choices.items():
        inner = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        for full, p in [(f"{name} {n}", s) for n, s in inner[0].choices.items()] if inner else [(name, sub)]:
            if any("--json" in a.option_strings for a in p._actions):
                found.add(full)
    assert found == set(JSON_COMMANDS)
    for where in JSON_COMMANDS.values():
        file, test = where.split("::")
        source = (ROOT / "tests" / file).read_text()
        body = source.split(f"def {test}(")[1].split("\ndef ")[0]
        assert "--json" in body and "json.loads(" in body, where
