"""The index: schema and rules, safe writing, lookups, export, and hostile YAML."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from auditor import yamlio
from auditor.index import (
    IndexValidationError,
    MeasuredRecord,
    ModelEntry,
    ModelRef,
    SameWeightsRecord,
    append_record,
    check_index,
    check_text,
    export,
    load_index,
    lookup,
    store,
)
from auditor.index.entries import HEADER, SCHEMA_VERSION, entry_from_dict, record_to_dict, render_entry
from auditor.index.export import CSV_COLUMNS
from auditor.index.migrations import migrate
from auditor.index.published import PUBLISHED
from auditor.index.store import read_plain

REPO = Path(__file__).resolve().parent.parent
SHA_A, SHA_B = "a" * 40, "b" * 40


def just_after(record) -> str:
    """A date one second after the record's (never in the future by more than the checks allow)."""
    from datetime import timedelta

    from auditor.index.checks import parse_date

    return (parse_date(record.date) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def record(audit_result) -> MeasuredRecord:
    return MeasuredRecord.from_audit(audit_result)


@pytest.fixture
def good(record) -> dict:
    """A valid file's data, to break one rule at a time."""
    return {"schema_version": SCHEMA_VERSION, "model": "demo/tiny-llama", "records": [record_to_dict(record)]}


def text_of(data: dict) -> str:
    return HEADER + yamlio.dump(data)


def messages(text: str, path: str = "demo/tiny-llama.yaml") -> list[str]:
    return [str(p) for p in check_text(text, path)[1]]


def test_a_real_audit_makes_a_valid_record(good, record):
    text = text_of(good)
    assert messages(text) == []
    entry = entry_from_dict(yamlio.load(text, "x"))
    assert entry.records == [record]  # nothing lost on the way through YAML
    assert record.verdict == "confirmed" and record.weights_sha256["model.safetensors"]


def set_path(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    target = data["records"][0]
    for p in parents:
        target = target[int(p)] if p.isdigit() else target[p]
    if value is DELETE:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("revision", "abc", "revision: 'abc' is not a 40-character commit sha"),
        ("revision", 1234567890, 'revision: 1234567890 is not of type "string" (quote it'),
        ("revision", None, 'revision: null is not of type "string"'),
        ("date", "2026-13-45", "date '2026-13-45' is not a valid date"),
        ("date", "2999-01-01T00:00:00Z", "date 2999-01-01T00:00:00Z is in the future"),
        ("super_weights.0.layer", 9, "layer 9 is not below num_layers 4"),
        ("super_weights.0.row", 64, "[64, 33] is outside the 64 x 128 matrix"),
        ("super_weights.0.col", 500, "[7, 500] is outside the 64 x 128 matrix"),
        ("super_weights.0.index", [33, 8], "index [33, 8] does not address [7, 33]"),
        ("super_weights.0.shape", [64], "super_weights[0].shape: [64] has less than 2 items"),
        ("ablation.verdict", "not_confirmed", "verdict not_confirmed disagrees with its figures"),
        ("ablation.perplexity_original", -1.0, "perplexity_original: -1.0 is less than or equal to the minimum"),
        ("ablation.control_weights.0", {"layer": 1, "row": 7, "col": 33}, "control_weights must be"),
        ("ablation.per_weight", [{"layer": 1, "row": 7, "col": 34, "perplexity": 5.0}], "per_weight lists"),
        ("ablation.per_weight.0.perplexity", 5.0, "is a super_weight but its figures do not clear the bar"),
        ("ablation.per_weight.0.verdict", "rejected", "is rejected but listed among the super weights"),
        ("hardware", DELETE, 'record: "hardware" is a required property'),
        ("colour", "red", "Additional properties are not allowed ('colour' was unexpected)"),
        ("source", "guessed", 'source: "guessed" is not one of "measured", "reported" or 2 other candidates'),
        ("dtype", "int4", 'dtype: "int4" is not one of "bfloat16", "float16" or "float32"'),
        ("revision", True, 'revision: true is not of type "string" (quote it, or YAML reads it as a boolean)'),
        ("hardware", "CPU\x1b[31m", "hardware: character U+001B is not allowed in index text"),  # a terminal escape
        ("architecture", "Llama\u202eMLtuo", "architecture: character U+202E is not allowed"),  # hides what it says
        ("super_weights.0.tensor", "a\n__import__('os').system('x')", "is not a dotted module or tensor name"),
        ("ablation.control_weights.0", {"layer": 1, "row": 64, "col": 0}, "[64, 0] is outside the 64 x 128 matrix"),
        (
            "ablation.control_weights.0",
            {"layer": 0, "row": 1, "col": 0},
            "is not in a matrix that holds a weight it stands for",
        ),
    ],
)
def test_each_kind_of_bad_record_is_rejected(good, path, value, message):
    data = copy.deepcopy(good)
    set_path(data, path, value)

    found = messages(text_of(data))

    assert len(found) >= 1 and any(message in m for m in found), found
    assert all(m.startswith("demo/tiny-llama.yaml: records[0]: ") for m in found)


def test_every_pattern_of_the_schema_is_explained_in_words():
    from auditor.models import PATTERN_WORDS as PATTERNS

    def patterns(node):
        if isinstance(node, dict):
            yield from [node["pattern"]] if "pattern" in node else []
            for value in node.values():
                yield from patterns(value)
        elif isinstance(node, list):
            for value in node:
                yield from patterns(value)

    schema = json.loads((REPO / "auditor" / "index" / "schema.json").read_text())
    assert set(patterns(schema)) <= PATTERNS.keys()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://arxiv.org/abs/2411.07191", True),
        ("https://github.com/mengxiayu/LLMSuperWeight/blob/main/outliers/model.py#L10", True),
        ("javascript:alert(1)", False),
        ("https://x.org/?a=\"'><script>", False),
        ("https://", False),
        ("http://arxiv.org/abs/2411.07191", False),
    ],
)
def test_a_citation_url_is_a_plain_https_url(url, ok):
    entry = yamlio.load(read_published("huggyllama/llama-7b"), "x")
    entry["records"][0]["url"] = url
    found = messages(text_of(entry), "huggyllama/llama-7b.yaml")
    assert found == [] if ok else any("is not an https:// URL" in m for m in found), found


def read_published(model: str) -> str:
    return (REPO / "index" / f"{model}.yaml").read_text()


def test_a_weight_listed_twice(good):
    data = copy.deepcopy(good)
    data["records"][0]["super_weights"] *= 2
    assert any("is listed twice" in m for m in messages(text_of(data)))


def test_file_level_rules(good):
    twice = copy.deepcopy(good)
    twice["records"] *= 2
    assert any("records[1]: duplicates an earlier record" in m for m in messages(text_of(twice)))

    backwards = copy.deepcopy(good)
    later = copy.deepcopy(backwards["records"][0])
    later["revision"] = SHA_B
    later["date"] = "2020-01-01T00:00:00Z"
    backwards["records"].append(later)
    assert any("records[1]: is older than the record before it" in m for m in messages(text_of(backwards)))

    assert messages(text_of(good), "other/name.yaml") == [
        "other/name.yaml: model demo/tiny-llama belongs in demo/tiny-llama.yaml"
    ]
    assert any("header comment is missing" in m for m in messages(yamlio.dump(good)))
    assert any("canonical format" in m for m in messages(text_of(good).replace("records:\n", "records:\n\n")))
    version = {**good, "schema_version": SCHEMA_VERSION + 1}
    assert any("is not a version this tool reads" in m and "newer superweight" in m for m in messages(text_of(version)))
    assert any(
        "schema_version is missing" in m
        for m in messages(text_of({k: v for k, v in good.items() if k != "schema_version"}))
    )


def test_same_weights_rules(good, record):
    mine = ModelEntry("demo/tiny-llama", [record])
    hashes = {"model.safetensors": record.weights_sha256["model.safetensors"]}
    copy_entry = ModelEntry(
        "other/copy",
        [SameWeightsRecord(SHA_A, "2026-11-22", "0.1.0", ModelRef("demo/tiny-llama", record.revision), hashes)],
    )
    assert check_index({"demo/tiny-llama.yaml": mine, "other/copy.yaml": copy_entry}) == []

    def copy_with(weights_sha256: dict) -> dict:
        record = msgspec.structs.replace(copy_entry.records[0], weights_sha256=weights_sha256)
        return {"demo/tiny-llama.yaml": mine, "other/copy.yaml": ModelEntry("other/copy", [record])}

    assert check_index(copy_with({"weights.safetensors": hashes["model.safetensors"]})) == []  # renamed, same bytes
    [problem] = check_index(copy_with({"model.safetensors": "1" * 64}))
    assert "its weight files' sha256 differ from those of demo/tiny-llama@" in str(problem)

    dangling = ModelEntry(
        "other/copy",
        [SameWeightsRecord(SHA_A, "2026-11-22", "0.1.0", ModelRef("gone/model", SHA_B), {"m.safetensors": "0" * 64})],
    )
    [problem] = check_index({"other/copy.yaml": dangling})
    assert str(problem) == f"other/copy.yaml: records[0]: same_weights_as gone/model@{SHA_B} is not in the index"

    itself = ModelEntry(
        "other/copy",
        [SameWeightsRecord(SHA_A, "2026-11-22", "0.1.0", ModelRef("OTHER/copy", SHA_B), {"m.safetensors": "0" * 64})],
    )
    assert any("points at the model itself" in m for m in messages(render_entry(itself), "other/copy.yaml"))

    twin = ModelEntry("Demo/Tiny-Llama", [record])
    [problem] = check_index({"demo/tiny-llama.yaml": mine, "Demo/Tiny-Llama.yaml": twin})
    assert "same model as demo/tiny-llama.yaml (Hub ids are case-insensitive)" in str(problem)


def test_load_index_applies_the_rules_across_files(tmp_path, record):
    index = tmp_path / "index"
    append_record("demo/tiny-llama", record, root=index)
    assert load_index(index).models() == ["demo/tiny-llama"]
    twin = index / "Demo" / "Tiny-Llama.yaml"
    twin.parent.mkdir()
    twin.write_text((index / "demo" / "tiny-llama.yaml").read_text().replace("demo/tiny-llama", "Demo/Tiny-Llama"))
    with pytest.raises(IndexValidationError, match="same model as"):  # one file from the cache, one parsed
        load_index(index)


def test_strings_yaml_would_coerce_stay_strings(record):
    digits = "1234567890" * 4
    entry = ModelEntry(
        "org/m",
        [SameWeightsRecord(digits, "2026-11-22", "1.0", ModelRef("org/base", SHA_A), {"m.safetensors": "1" * 64})],
    )
    text = render_entry(entry)

    assert f"revision: '{digits}'" in text and "tool_version: '1.0'" in text and "date: '2026-11-22'" in text
    back = entry_from_dict(yamlio.load(text, "x")).records[0]
    assert (back.revision, back.tool_version, back.date) == (digits, "1.0", "2026-11-22")


# -- writing ----------------------------------------------------------------------------------------


def test_a_text_of_several_lines_reads_back_whatever_its_lines_look_like(tmp_path, record):
    from auditor.index import ReportedRecord

    note = "a summary\n- - - - - - - - - - - -\n? ? ? ? ? ? ? ? ? ?\nend"  # like nesting, if written as lines
    reported = ReportedRecord(
        revision=None,
        date="2026-11-20",
        citation="A paper",
        note=note,
        architecture="LlamaForCausalLM",
        num_layers=4,
        super_weights=[record.super_weights[0]],
    )
    append_record("demo/tiny-llama", reported, root=tmp_path)
    assert lookup("demo/tiny-llama", root=tmp_path)[0].note == note


def test_rewriting_unchanged_data_gives_an_empty_diff(tmp_path, record):
    path = append_record("demo/tiny-llama", record, root=tmp_path)
    before = path.read_bytes()

    assert render_entry(store.read_entry(path, tmp_path)).encode() == before
    assert append_record("demo/tiny-llama", record, root=tmp_path) is None  # the same audit again
    assert path.read_bytes() == before


def test_a_reaudit_appends_and_keeps_history(tmp_path, record):
    later = MeasuredRecord(**{**msgspec.structs.asdict(record), "revision": SHA_B, "date": just_after(record)})
    earlier = MeasuredRecord(**{**msgspec.structs.asdict(record), "revision": SHA_A, "date": "2020-01-01T00:00:00Z"})
    append_record("demo/tiny-llama", record, root=tmp_path)
    append_record("demo/tiny-llama", later, root=tmp_path)
    append_record("demo/tiny-llama", earlier, root=tmp_path)  # finished first, written last

    revisions = [r.revision for r in lookup("demo/tiny-llama", root=tmp_path)]
    assert revisions == [SHA_A, record.revision, SHA_B]


WRITER = textwrap.dedent(
    """
    import sys
    from msgspec.structs import replace
    from auditor.index import append_record, lookup
    root, tag = sys.argv[1], sys.argv[2]
    template = lookup("demo/tiny-llama", root=root)[0]
    for i in range(8):
        record = replace(template, revision=f"{tag}{i:039x}", date=f"2026-11-22T07:00:{i:02d}Z")
        append_record("demo/tiny-llama", record, root=root)
    """
)


def test_two_concurrent_writers_both_land(tmp_path, record):
    append_record("demo/tiny-llama", record, root=tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag]) for tag in "cd"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    revisions = {r.revision for r in lookup("demo/tiny-llama", root=tmp_path)}
    assert len(revisions) == 17
    assert {r[0] for r in revisions} == {"c", "d", record.revision[0]}


CRASHER = textwrap.dedent(
    """
    import os, sys
    from msgspec.structs import replace
    from auditor.index import append_record, lookup
    root = sys.argv[1]
    template = lookup("demo/tiny-llama", root=root)[0]
    os.replace = lambda *a: os._exit(9)  # die after the temp file is written, before the rename
    append_record("demo/tiny-llama", replace(template, revision="e" * 40), root=root)
    """
)


def test_a_crash_before_the_rename_leaves_the_old_file(tmp_path, record):
    path = append_record("demo/tiny-llama", record, root=tmp_path)
    before = path.read_bytes()

    assert subprocess.run([sys.executable, "-c", CRASHER, str(tmp_path)], timeout=120).returncode == 9

    assert path.read_bytes() == before
    assert list(path.parent.glob(".tiny-llama.yaml.*.tmp"))  # the orphan is there...
    assert len(load_index(tmp_path)) == 1  # ...and ignored


def test_an_invalid_record_is_never_written(tmp_path, record):
    bad = MeasuredRecord(**{**msgspec.structs.asdict(record), "num_layers": 1})
    with pytest.raises(IndexValidationError, match="layer 1 is not below num_layers 1"):
        append_record("demo/tiny-llama", bad, root=tmp_path)
    assert not (tmp_path / "demo").exists()


# -- reading ----------------------------------------------------------------------------------------


def test_the_repository_index_is_valid_and_holds_the_published_coordinates():
    index = load_index(REPO / "index")
    for p in PUBLISHED:
        [record] = [r for r in index.get(p.model).records if r.source == "reported"]
        assert [(w.layer, w.row, w.col) for w in record.super_weights] == list(p.weights)
        assert record.citation == p.citation
    assert "layer 2" in index.get("allenai/OLMo-1B-0724-hf").records[0].note


def test_lookup_is_case_insensitive_and_filters_by_revision(tmp_path, record):
    other = MeasuredRecord(**{**msgspec.structs.asdict(record), "revision": SHA_B, "date": just_after(record)})
    append_record("demo/tiny-llama", record, root=tmp_path)
    append_record("demo/tiny-llama", other, root=tmp_path)

    assert len(lookup("DEMO/Tiny-LLAMA", root=tmp_path)) == 2
    assert lookup("demo/tiny-llama", SHA_B, root=tmp_path) == [other]
    assert lookup("demo/unknown", root=tmp_path) == []
    index = load_index(tmp_path)
    assert index.get("Demo/TINY-llama").latest() == other
    assert index.lookup("demo/tiny-llama", record.revision) == [record]


def test_lookup_and_export_agree():
    index = load_index(REPO / "index")
    dump = json.loads(export(index, "json", generated_at="2026-11-22T00:00:00Z"))
    assert (dump["schema_version"], dump["generated_at"]) == (SCHEMA_VERSION, "2026-11-22T00:00:00Z")
    for model in dump["models"]:
        assert model["records"] == [record_to_dict(r) for r in lookup(model["model"], root=REPO / "index")]

    lines = [json.loads(line) for line in export(index, "jsonl").splitlines()]
    assert len(lines) == sum(len(e.records) for e in index)
    assert all(line["schema_version"] == SCHEMA_VERSION and line["generated_at"] for line in lines)

    rows = list(csv.DictReader(io.StringIO(export(index, "csv"))))
    weights = sum(len(r.super_weights) for e in index for r in e.records)
    assert len(rows) == weights
    llama = [r for r in rows if r["model"] == "huggyllama/llama-7b"]
    assert [(r["weight.layer"], r["weight.row"], r["weight.col"], r["source"]) for r in llama] == [
        ("2", "3968", "7003", "reported")
    ]
    assert list(rows[0]) == list(CSV_COLUMNS) and "ablation.perplexity_original" in CSV_COLUMNS


def test_csv_text_cells_cannot_run_as_spreadsheet_formulas(tmp_path, record):
    from auditor.index import ReportedRecord

    weight = record.super_weights[0]
    cited = ReportedRecord(
        revision=None,
        date="2026-11-20",
        citation='=HYPERLINK("https://evil.example","click")',
        architecture="+cmd|' /C calc'!A0",
        num_layers=4,
        super_weights=[weight],
    )
    append_record("demo/tiny-llama", record, root=tmp_path)
    append_record("demo/tiny-llama", cited, root=tmp_path)

    rows = list(csv.DictReader(io.StringIO(export(load_index(tmp_path), "csv"))))

    reported = next(r for r in rows if r["source"] == "reported")
    assert reported["citation"] == "'" + cited.citation and reported["architecture"] == "'" + cited.architecture
    measured = next(r for r in rows if r["source"] == "measured")
    assert float(measured["weight.value"]) == weight.value < 0  # numbers stay numbers, signs and all


def test_the_fast_reader_and_the_strict_one_agree(tmp_path, good):
    """load_index reads with the fast path where it can; wherever YAML 1.1 and 1.2 could disagree, or the
    text holds what only the strict check may judge, it must land where the strict reader does."""
    text = text_of(good)
    variants = {
        "canonical": text,
        "escape": text.replace("hardware: ", 'hardware: "CPU\\e[31m" #', 1),
        "yes": text.replace("device: cpu", "device: yes"),
        "inf": text.replace("elapsed_s: ", "elapsed_s: .inf #", 1),
        "bidi": text.replace("architecture: LlamaForCausalLM", "architecture: Llama\u202eMLtuo"),
        "tag": text.replace("model_type: llama", "model_type: !!str llama"),
        "unicode": text.replace("hardware: ", "hardware: 'Ryzen™' #", 1),
        "deep": text.replace("records:", "x: " + "[" * 40 + "]" * 40 + "\nrecords:", 1),
    }
    for name, variant in variants.items():
        root = tmp_path / name / "demo"
        root.mkdir(parents=True)
        (root / "tiny-llama.yaml").write_text(variant, encoding="utf-8")
        strict_entry, strict_problems = check_text(variant, "demo/tiny-llama.yaml", canonical=False)
        try:
            fast = load_index(root.parent).get("demo/tiny-llama")
            found = []
        except IndexValidationError as e:
            fast, found = None, [str(p) for p in e.problems]
        assert found == [str(p) for p in strict_problems], name
        assert fast == strict_entry, name
    assert store.read_entry_fast(text.encode()) is not None  # the canonical text takes the fast path
    # The one kind of text they read differently, as documented: a number in a form only YAML 1.2 reads
    # as a number (`04`). load_index takes it as 4; `index validate` (run on every change) refuses it.
    octal = text.replace("num_layers: 4", "num_layers: 04")
    assert store.read_entry_fast(octal.encode()).records[0].num_layers == 4
    assert any("'04' reads differently in YAML 1.1 and 1.2" in m for m in messages(octal))


def test_a_date_in_the_future_is_judged_by_the_clock_of_each_read(tmp_path, record, monkeypatch):
    append_record("demo/tiny-llama", record, root=tmp_path)
    load_index(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # 1970: every record is now in the future
    with pytest.raises(IndexValidationError, match="is in the future"):
        load_index(tmp_path)


# -- schemas and versions ---------------------------------------------------------------------------


def test_every_committed_schema_is_generated_from_its_model():
    from auditor import schemas

    for path, generate in schemas.SCHEMAS.items():
        assert (REPO / path).read_text(encoding="utf-8") == schemas.render(generate()), (
            f"{path} differs from its model: run python -m auditor.schemas"
        )


def test_the_schema_and_the_model_judge_alike(good):
    """The published schema is generated from the model; a file one refuses, the other refuses too."""
    from auditor.index.checks import schema_problems
    from auditor.models import DataError, from_data

    cases = [("revision", "abc"), ("ablation.tokens", 1), ("super_weights.0.shape", [64]), ("colour", "red")]
    cases += [("url", "http://x.org"), ("weights_sha256", {"a.bin": "0" * 64}), ("profile.layer", [-1])]
    for path, value in cases:
        data = copy.deepcopy(good)
        set_path(data, path, value)
        assert schema_problems(data, "x"), path
        with pytest.raises(DataError):
            from_data(data["records"][0], MeasuredRecord)
    assert schema_problems(good, "x") == []


def before_v3(record: MeasuredRecord) -> MeasuredRecord:
    """`record` as schema 2 could hold it: no per-weight verdicts, controls or screen figures."""
    from auditor.records import WeightPerplexity

    a = record.ablation
    per = [WeightPerplexity(w.layer, w.row, w.col, w.perplexity, w.expert) for w in a.per_weight]
    return msgspec.structs.replace(record, ablation=msgspec.structs.replace(a, per_weight=per))


def v1_file(record) -> dict:
    """`record` as schema version 1 wrote it: a lone super weight had no per_weight entry."""
    data = record_to_dict(before_v3(record))
    data["ablation"] = {**data["ablation"], "per_weight": []}
    data["ablation"]["diverged"] = [d for d in data["ablation"].get("diverged", []) if not d.startswith("layer ")]
    return {"schema_version": 1, "model": "demo/tiny-llama", "records": [data]}


def test_migration_v1_to_v2_lists_a_lone_super_weight_in_per_weight(record):
    from auditor.index.migrations import STEPS

    old = v1_file(record)
    new = STEPS[1](copy.deepcopy(old))
    [alone] = new["records"][0]["ablation"]["per_weight"]
    w = record.super_weights[0]
    assert new["schema_version"] == 2 and old["schema_version"] == 1  # the input is left as it was
    assert alone == {
        "layer": w.layer,
        "row": w.row,
        "col": w.col,
        "perplexity": old["records"][0]["ablation"]["perplexity_ablated"],
    }
    assert entry_from_dict(old).records == [before_v3(record)]  # read as a record of today, nothing lost

    diverged = copy.deepcopy(old)
    diverged["records"][0]["ablation"] |= {"perplexity_ablated": None, "diverged": ["ablated"]}
    ablation = STEPS[1](diverged)["records"][0]["ablation"]
    assert ablation["per_weight"][0]["perplexity"] is None
    assert ablation["diverged"] == ["ablated", f"layer {w.layer} [{w.row}, {w.col}]"]

    several = copy.deepcopy(old)
    several["records"][0]["super_weights"] *= 2
    assert STEPS[1](several)["records"] == several["records"]  # only a lone weight changes


def test_migration_v2_to_v3_keeps_weights_judged_as_a_set(record):
    from auditor.index.migrations import STEPS

    old = {"schema_version": 2, "model": "demo/tiny-llama", "records": [record_to_dict(before_v3(record))]}
    new = STEPS[2](copy.deepcopy(old))
    assert new == {**old, "schema_version": 3}  # nothing invented: no verdict, no control, no rejection
    [migrated] = entry_from_dict(old).records
    assert [w.verdict for w in migrated.ablation.per_weight] == [None] and migrated.rejected_candidates == []
    assert messages(text_of(migrate(new))) == []  # a valid record of today: weights judged as a set


def test_migration_v3_to_v4_invents_no_quantization_figures(record):
    from auditor.index.migrations import STEPS

    old = {"schema_version": 3, "model": "demo/tiny-llama", "records": [record_to_dict(before_v3(record))]}
    new = STEPS[3](copy.deepcopy(old))
    assert new == {**old, "schema_version": 4}
    [migrated] = entry_from_dict(old).records
    assert migrated.quantization is None and messages(text_of(migrate(new))) == []


def test_migration_v4_to_v5_changes_nothing(record):
    from auditor.index.migrations import STEPS

    old = {"schema_version": 4, "model": "demo/tiny-llama", "records": [record_to_dict(record)]}
    assert STEPS[4](copy.deepcopy(old)) == {**old, "schema_version": 5}  # screened records are new: none before
    assert entry_from_dict(old).records == [record]


def test_every_version_step_has_a_migration():
    from auditor.index.migrations import SCHEMA_VERSION as CURRENT
    from auditor.index.migrations import STEPS

    assert sorted(STEPS) == list(range(1, CURRENT))


def test_index_migrate_rewrites_old_files_in_the_current_version(tmp_path, record):
    from auditor.cli import main

    path = tmp_path / "demo" / "tiny-llama.yaml"
    path.parent.mkdir()
    path.write_text(text_of(v1_file(record)))
    assert load_index(tmp_path).get("demo/tiny-llama").records == [before_v3(record)]  # migrated in memory
    assert any("canonical format" in m for m in messages(path.read_text()))  # ...but the file is old

    assert main(["index", "migrate", "--index", str(tmp_path)]) == 0
    assert path.read_text() == render_entry(ModelEntry("demo/tiny-llama", [before_v3(record)]))
    assert main(["index", "migrate", "--index", str(tmp_path)]) == 0 and messages(path.read_text()) == []


def test_importing_the_index_does_not_import_torch():
    code = "import sys, auditor.index; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- hostile YAML -----------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "!!python/object/apply:os.system ['touch {marker}']\n",
            "!!python/object/apply:os.system values are not allowed",
        ),
        ("model: !!python/name:os.system\n", "values are not allowed"),
        (BOMB, "aliases (*name) are not allowed"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
        ("a: " + "x" * (5 * 1024 * 1024), "over the 4,194,304-byte limit"),
        ("model: a\nmodel: b\n", "duplicate key 'model'"),
        ("data: !!binary aGk=\n", "!!binary values are not allowed"),
        ("date: 2026-11-22\n", "!!timestamp values are not allowed: quote it"),
        ("- " * 100_000 + "x", "more than 8 levels opened on one line"),  # libyaml would recurse and crash
        ("? " * 100_000 + "x", "more than 8 levels opened on one line"),
        ("on: 1\n", "keys must be strings"),  # YAML 1.1 reads the key as True
        ("num_layers: 012\n", "'012' reads differently in YAML 1.1 and 1.2"),  # 10 or 12
        ("flag: yes\n", "'yes' reads differently in YAML 1.1 and 1.2"),
        ("value: .inf\n", ".inf is not a finite number"),
        ("a: !!int [1, 2]\n", "a !!int tag on a list is not plain data"),
        ("a: !!str {b: 1}\n", "a !!str tag on a mapping is not plain data"),
        ("a: !!seq x\n", "a !!seq tag on a single value is not plain data"),
    ],
)
def test_malicious_yaml_is_refused_without_harm(tmp_path, text, message):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil" / "model.yaml"
    path.parent.mkdir()
    path.write_text(HEADER + text.replace("{marker}", str(marker)))

    found = messages(path.read_text(), "evil/model.yaml")

    assert any(message in m for m in found), found
    assert not marker.exists()
    with pytest.raises(IndexValidationError):
        load_index(tmp_path)


def test_a_file_is_read_whole_up_to_the_byte_limit_and_refused_past_it(tmp_path):
    # read_plain asks for the size fstat gives and reads on to the end: the boundary on both sides, and a
    # file with no size to go by (a FIFO, refused before any read could block).
    limit = yamlio.MAX_BYTES
    (tmp_path / "at").write_bytes(b"x" * limit)
    (tmp_path / "past").write_bytes(b"x" * (limit + 1))
    os.mkfifo(tmp_path / "fifo")

    assert read_plain(str(tmp_path / "at")) == (b"x" * limit, "")
    assert read_plain(str(tmp_path / "past")) == (None, "is over the 4,194,304-byte limit")
    assert read_plain(str(tmp_path / "fifo")) == (None, "is not a plain file")


FLOODS = {
    "nested lists": "- - - - x\n" * 400_000,  # 4 MB, 1.6 million values: 22 s and 750 MB to compose
    "a mapping": "a: b\n" * 838_000,
    "distinct keys": "".join(f"k{i}: v\n" for i in range(380_000)),  # 760,001 values: counted one by one
    "a flow list": "[" + "1," * 999_990 + "]",
    "empty entries": "-\r" * 2_000_000,  # lines ended by a bare CR, which libyaml takes as a line break
}


@pytest.fixture
def no_composing(monkeypatch):
    """yamlio's loader, unable to compose: a text it refuses before composing passes through unharmed."""

    class NoComposing(yamlio.Loader):
        def get_single_node(self):
            raise AssertionError("the values were composed into nodes before they were counted")

    monkeypatch.setattr(yamlio, "Loader", NoComposing)


@pytest.mark.parametrize("text", FLOODS.values(), ids=FLOODS.keys())
def test_a_flood_of_values_is_refused_before_it_is_composed(no_composing, text):
    with pytest.raises(yamlio.YamlError, match=r"^flood\.yaml: more than 500,000 values$"):
        yamlio.load(text, "flood.yaml")


def test_index_and_queue_files_refuse_a_flood_before_composing_it(tmp_path, no_composing):
    from auditor.scheduler.queue import QueueError, load_queue

    path = tmp_path / "evil" / "model.yaml"  # over FAST_BYTES: the strict reader's
    path.parent.mkdir()
    path.write_text(HEADER + FLOODS["nested lists"][: -len(HEADER)])
    with pytest.raises(IndexValidationError, match=r"evil/model\.yaml: more than 500,000 values"):
        load_index(tmp_path)
    queue = tmp_path / "queue.yaml"
    queue.write_text(FLOODS["a mapping"])
    with pytest.raises(QueueError, match=r"queue\.yaml: more than 500,000 values"):
        load_queue(queue)


def test_marks_inside_text_are_not_taken_for_values():
    text = "".join(f"- 'a: b, c: d, - e, - f, g, h, {i}'\n" for i in range(60_000))
    assert sum(text.count(mark) for mark in ("- ", ": ", ",")) > yamlio.MAX_NODES  # 60,001 values all the same

    assert yamlio.load(text, "x")[-1] == "a: b, c: d, - e, - f, g, h, 59999"


def test_profile_columns_of_different_lengths_are_a_problem_not_a_crash(good):
    data = copy.deepcopy(good)
    data["records"][0]["profile"]["layer"] = data["records"][0]["profile"]["layer"][:2]
    assert messages(text_of(data)) == ["demo/tiny-llama.yaml: records[0]: profile: its columns have different lengths"]


@pytest.mark.parametrize("model", ["gpt2", "../../etc/passwd", "org/name/extra", ""])
def test_lookup_refuses_what_is_not_a_hub_id(model):
    from auditor.errors import UsageError

    with pytest.raises(UsageError, match="is not a Hub model id"):
        lookup(model, root=REPO / "index")


def test_a_symbolic_link_is_not_an_index_file(tmp_path, record):
    path = append_record("demo/tiny-llama", record, root=tmp_path)
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "model.yaml").symlink_to(path)
    with pytest.raises(IndexValidationError, match=r"evil/model\.yaml: is a symbolic link"):
        load_index(tmp_path)


def test_anything_out_of_place_in_the_index_is_reported(tmp_path, record):
    import os

    index = tmp_path / "index"
    append_record("demo/tiny-llama", record, root=index)
    outside = tmp_path / "outside"
    append_record("evil/model", msgspec.structs.replace(record), root=outside)
    (index / "evil").symlink_to(outside / "evil")  # a linked folder would serve files from anywhere
    (index / "top.yaml").write_text("x")
    (index / "demo" / "old.yml").write_text("x")
    (index / "demo" / "dir.yaml").mkdir()
    os.mkfifo(index / "demo" / "pipe.yaml")  # reading it would hang
    (index / "demo" / ".tmp-123").write_text("half a file")  # an interrupted write's temp file: passed over

    with pytest.raises(IndexValidationError) as caught:
        load_index(index)

    assert sorted(map(str, caught.value.problems)) == [
        "demo/dir.yaml: is not a plain file",
        "demo/old.yml: is out of place: the index holds <org>/<name>.yaml files",
        "demo/pipe.yaml: is not a plain file",
        "evil: is a symbolic link; the index holds plain files",
        "top.yaml: is out of place: the index holds <org>/<name>.yaml files",
    ]
    with pytest.raises(IndexValidationError, match="in a linked folder"):
        lookup("evil/model", root=index)


def test_the_queue_keeps_requests_and_failures_and_the_newest_skipped():
    from auditor.scheduler.queue import Item, Queue

    def item(n: int, origin: str, state: str) -> Item:
        return Item(f"org/m{n}", f"{n:040x}", origin, state, "2026-11-01T00:00:00Z", f"2026-11-{n + 1:02d}T00:00:00Z")

    queue = Queue([item(n, "discovered", "skipped") for n in range(10)])
    queue.items += [item(20, "request", "skipped"), item(21, "discovered", "failed"), item(22, "discovered", "pending")]

    queue.prune(keep_skipped=3)

    assert sorted(i.model for i in queue.items) == ["org/m20", "org/m21", "org/m22", "org/m7", "org/m8", "org/m9"]
