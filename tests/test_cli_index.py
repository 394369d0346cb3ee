"""`superweight index ...` from the command line."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.index import MeasuredRecord, append_record

REPO = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_the_repository_index(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = run(capsys, "index", "validate")
    assert code == 0 and out == ""
    assert "10 file(s), 10 record(s): all valid" in err


def test_validate_lists_every_problem_with_file_and_record(tmp_path, capsys):
    index = shutil.copytree(REPO / "index", tmp_path / "index")
    bad = index / "huggyllama" / "llama-7b.yaml"
    bad.write_text(bad.read_text().replace("row: 3968", "row: 9999").replace("num_layers: 32", "num_layers: 2"))
    (index / "mistralai" / "Mistral-7B-v0.1.yaml").rename(index / "mistralai" / "mistral.yaml")

    code, out, err = run(capsys, "index", "validate", str(index))

    assert code == 1
    assert out.splitlines() == [
        "huggyllama/llama-7b.yaml: records[0]: super_weights[0]: layer 2 is not below num_layers 2",
        "huggyllama/llama-7b.yaml: records[0]: super_weights[0]: [9999, 7003] is outside the 4096 x 11008 matrix",
        "huggyllama/llama-7b.yaml: records[0]: super_weights[0]: index [3968, 7003] does not address [9999, 7003]",
        "mistralai/mistral.yaml: model mistralai/Mistral-7B-v0.1 belongs in mistralai/Mistral-7B-v0.1.yaml",
    ]
    assert "4 problem(s) in 10 file(s)" in err


def test_validate_one_file_and_a_missing_path(tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, "index", "validate", str(REPO / "index" / "huggyllama" / "llama-7b.yaml"))
    assert code == 0, err
    monkeypatch.chdir(REPO / "index" / "huggyllama")  # a relative path, from inside the org folder
    code, _, err = run(capsys, "index", "validate", "llama-7b.yaml")
    assert code == 0 and "1 file(s), 1 record(s)" in err
    code, _, err = run(capsys, "index", "validate", str(tmp_path / "nope"))
    assert code == 1 and "no such file or directory" in err


def test_lookup_text_and_json(capsys):
    code, out, _ = run(capsys, "index", "lookup", "MICROSOFT/phi-3-mini-4k-instruct", "--index", str(REPO / "index"))
    assert code == 0
    assert out.count("  layer ") == 6 and "layer 2 [525, 808]" in out

    code, out, _ = run(capsys, "index", "lookup", "huggyllama/llama-7b", "--json", "--index", str(REPO / "index"))
    data = json.loads(out)
    assert data["records"][0]["super_weights"][0]["row"] == 3968

    code, _, err = run(capsys, "index", "lookup", "nobody/nothing", "--index", str(REPO / "index"))
    assert code == 1 and "nobody/nothing is not in the index" in err


def test_export_formats(tmp_path, capsys):
    code, out, _ = run(capsys, "index", "export", "--format", "json", "--index", str(REPO / "index"))
    assert code == 0 and len(json.loads(out)["models"]) == 10
    code, _, err = run(
        capsys, "index", "export", "--format", "csv", "--out", str(tmp_path / "i.csv"), "--index", str(REPO / "index")
    )
    rows = list(csv.DictReader(io.StringIO((tmp_path / "i.csv").read_text())))
    assert code == 0 and len(rows) == 24 and f"wrote {tmp_path / 'i.csv'}" in err


def test_seed_is_idempotent(tmp_path, capsys):
    code, _, err = run(capsys, "index", "seed", "--index", str(tmp_path))
    assert code == 0 and "10 reported record(s) added" in err
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.yaml")}
    code, _, err = run(capsys, "index", "seed", "--index", str(tmp_path))
    assert code == 0 and "0 reported record(s) added, 10 already there" in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.yaml")} == before


def test_measured_records_sit_beside_reported_ones(tmp_path, audit_result, capsys):
    index = shutil.copytree(REPO / "index", tmp_path / "index")
    record = MeasuredRecord.from_audit(audit_result)
    append_record("demo/tiny-llama", record, root=index)

    code, out, _ = run(capsys, "index", "lookup", "demo/tiny-llama", "--index", str(index))
    assert code == 0 and out.startswith(f"measured {record.date} @ {record.revision}: confirmed (zeroed x")
    code, _, _ = run(capsys, "index", "validate", str(index))
    assert code == 0


def test_every_index_command_reads_superweight_index_and_index_alike(tmp_path, capsys, monkeypatch):
    """--index DIR and $SUPERWEIGHT_INDEX name the same thing for every command that reads the index."""
    monkeypatch.chdir(tmp_path)  # no ./index here: only the option or the variable can find it
    index = shutil.copytree(REPO / "index", tmp_path / "elsewhere")
    for how in (["--index", str(index)], []):
        if not how:
            monkeypatch.setenv("SUPERWEIGHT_INDEX", str(index))
        code, out, err = run(capsys, "index", "lookup", "huggyllama/llama-7b", *how)
        assert code == 0 and "layer 2 [3968, 7003]" in out, err
        code, _, err = run(capsys, "index", "validate", *how)
        assert code == 0 and "10 file(s)" in err
        code, out, _ = run(capsys, "index", "export", *how)
        assert code == 0 and len(json.loads(out)["models"]) == 10
        site = tmp_path / f"site{len(how)}"
        code, _, err = run(capsys, "site", "build", "--out", str(site), *how)
        assert code == 0 and "built 10 model pages" in err
    seeded = tmp_path / "seeded"
    monkeypatch.setenv("SUPERWEIGHT_INDEX", str(seeded))
    code, _, err = run(capsys, "index", "seed")
    assert code == 0 and len(list(seeded.rglob("*.yaml"))) == 10
    monkeypatch.delenv("SUPERWEIGHT_INDEX")
    code, _, err = run(capsys, "index", "lookup", "huggyllama/llama-7b")
    assert (
        code == 1
        and err
        == "superweight: error: no index directory at index (run from the repository root or pass --index DIR)\n"
    )


def test_paths_that_cannot_work_are_one_line_errors(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(SystemExit):  # argparse: usage and one line, exit 2
        main(["index", "seed", "--index", str(a_file)])
    assert f"argument --index: {a_file} is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["audit", "org/model", "--index", ""])  # never the current directory by accident
    assert "argument --index: an empty path: name a directory" in capsys.readouterr().err
    code, _, err = run(capsys, "index", "export", "--index", str(REPO / "index"), "--out", str(tmp_path))
    assert (code, err) == (1, f"superweight: error: {tmp_path}: Is a directory\n")
    code, _, err = run(capsys, "site", "build", "--index", str(REPO / "index"), "--out", str(a_file / "site"))
    assert code == 1 and err.startswith("superweight: error: ") and "internal error" not in err
    site = ["site", "build", "--index", str(REPO / "index"), "--out", str(tmp_path / "site")]
    code, _, err = run(capsys, *site, "--queue", str(tmp_path / "missing.yaml"))  # named, so it must be there
    assert (code, err) == (1, f"superweight: error: --queue {tmp_path / 'missing.yaml'}: no such file\n")
    code, _, err = run(capsys, *site, "--base-url", "notaurl")
    assert code == 1 and "--base-url notaurl: give a path from the server's root (/repo/) or a URL" in err
    assert not (tmp_path / "site").exists()
    code, _, err = run(capsys, "audit", "org/model", "--index", str(a_file / "index"))  # before any download
    assert (code, err) == (1, f"superweight: error: --index {a_file / 'index'}: Not a directory\n")
    code, out, _ = run(capsys, "site", "check", str(tmp_path / "nowhere"))
    assert code == 1 and out == f"{tmp_path / 'nowhere'}: no such directory\n"
    monkeypatch.setenv("SUPERWEIGHT_INDEX", str(tmp_path / "nowhere"))
    code, _, err = run(capsys, "index", "lookup", "org/model")
    assert code == 1 and f"no index directory at {tmp_path / 'nowhere'} (from $SUPERWEIGHT_INDEX)" in err
