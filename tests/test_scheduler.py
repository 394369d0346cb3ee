"""The scheduled auditor against the local Hub stand-in: discovery, requests, the queue and runs."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import FROZEN
from filelock import FileLock
from msgspec.structs import replace

from auditor import hub as hub_client
from auditor.fileio import git_blob_sha
from auditor.index import IndexValidationError, MeasuredRecord, Problem, append_record, lookup
from auditor.scheduler.config import Config, ConfigError, RunConfig, load_config
from auditor.scheduler.discover import Cursor, discover, load_cursor
from auditor.scheduler.eligibility import Ineligible
from auditor.scheduler.lock import RunInProgressError
from auditor.scheduler.queue import Item, Queue, QueueError, load_queue, save_queue
from auditor.scheduler.requestfiles import AuditRequest, check_request, read_request
from auditor.scheduler.runner import run
from auditor.settings import AuditSettings
from auditor.synthetic import Plant

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(hub_client, "RETRY_BACKOFF_S", 0.01)


@pytest.fixture
def config(eval_text) -> Config:
    return Config(
        licenses=["apache-2.0", "mit"],
        memory_gib=1.0,
        audit=AuditSettings(device="cpu", eval_text=str(eval_text), max_tokens=1024, seq_len=256),
        run=RunConfig(max_models=5, timeout="5m", max_attempts=2, prefetch=False),  # faults hit the audits
    )


def files_of(checkpoint: Path, **changes) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    config = json.loads(files["config.json"])
    config.update(changes.pop("config", {}))
    files["config.json"] = json.dumps(config).encode()
    for name in changes.pop("drop", ()):
        del files[name]
    return {**files, **changes.pop("extra", {})}


def huge_safetensors() -> bytes:
    """A header claiming 40 billion bf16 parameters: the Hub reports its size; nobody downloads it."""
    header = json.dumps({"w": {"dtype": "BF16", "shape": [200_000, 200_000], "data_offsets": [0, 8 * 10**10]}})
    return struct.pack("<Q", len(header)) + header.encode()


def packed_safetensors() -> dict[str, bytes]:
    """GPTQ-style storage: the weights packed into int32 words, with a few float scales beside them."""
    tensors = {"qweight": ("I32", [64, 64]), "scales": ("F16", [4, 64])}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = shape[0] * shape[1] * (4 if dtype == "I32" else 2)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return {"model.safetensors": struct.pack("<Q", len(raw)) + raw + b"\0" * offset}


@pytest.fixture
def repo(tmp_path) -> Path:
    for d in ("index", "queue", "requests"):
        (tmp_path / d).mkdir()
    return tmp_path


@pytest.fixture
def zoo(hub, build_checkpoint):
    """Models on the Hub stand-in, one per discovery outcome, created a minute apart (newest first below)."""
    good, other = build_checkpoint("llama"), build_checkpoint("llama", [Plant(2, 11, 50)])
    apache, mit = {"license": "apache-2.0"}, {"license": "mit"}
    models = [
        ("org/good-base", files_of(good), dict(card_data=apache, downloads=10)),
        ("org/good-finetune", files_of(other), dict(card_data={**mit, "base_model": "org/good-base"}, downloads=999)),
        ("org/gated", files_of(good), dict(card_data=apache, gated="auto")),
        (
            "org/pickled",
            files_of(good, drop=["model.safetensors"], extra={"pytorch_model.bin": b"\x80"}),
            dict(card_data=apache),
        ),
        (
            "org/remote",
            files_of(good, config={"model_type": "evil", "auto_map": {"AutoModelForCausalLM": "m.M"}}),
            dict(card_data=apache),
        ),
        (
            "org/gptq",
            files_of(good, config={"quantization_config": {"quant_method": "gptq"}}, extra=packed_safetensors()),
            dict(card_data=apache),
        ),
        (
            "org/t5",
            files_of(good, config={"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}),
            dict(card_data=apache),
        ),
        ("org/no-license", files_of(good), dict(card_data={})),
        ("org/proprietary", files_of(good), dict(card_data={"license": "other"})),
        ("org/huge", files_of(good, extra={"model.safetensors": huge_safetensors()}), dict(card_data=apache)),
    ]
    shas = {}
    for n, (name, files, kw) in enumerate(models):
        shas[name] = hub.add_model(name, files, created_at=T0 - timedelta(minutes=n), **kw)
    hub.page_size = 2
    return shas


EXPECTED_SKIPS = {
    "org/gated": "gated",
    "org/pickled": "pickle_only",
    "org/remote": "remote_code",
    "org/gptq": "quantized",
    "org/t5": "unsupported_architecture",
    "org/no-license": "license",
    "org/proprietary": "license",
    "org/huge": "too_large",
}


def test_discovery_queues_the_eligible_and_skips_the_rest_with_reasons(zoo, repo, config, hub):
    queue, cursor = Queue(), Cursor()

    found = discover(config, queue=queue, cursor=cursor, index_root=repo / "index")

    assert found.examined == 10
    assert [(i.model, i.revision) for i in found.queued] == [
        ("org/good-base", zoo["org/good-base"]),
        ("org/good-finetune", zoo["org/good-finetune"]),
    ]
    assert {i.model: i.code for i in found.skipped} == EXPECTED_SKIPS
    assert all(i.message and i.state == "skipped" for i in found.skipped)
    assert "74.5 GiB of weights" in next(i.message for i in found.skipped if i.code == "too_large")
    # Pagination: the listing came in pages of two.
    listing = [r for r in hub.requests if r.path == "/api/models" and r.query["sort"] == ["createdAt"]]
    assert len(listing) == 5
    # Requests go first, then base models before fine-tunes even with fewer downloads.
    assert [i.model for i in queue.pending(config.priority)] == ["org/good-base", "org/good-finetune"]
    assert [i.model for i in queue.pending(["downloads"])] == ["org/good-finetune", "org/good-base"]


def test_too_large_means_too_large_for_every_gpu_of_the_biggest_node(zoo, repo, config):
    """97 GiB of memory needed (74.5 GiB of weights x 1.3): not on one 1 GiB device, but on 100 of one node
    when audits spread over them (`device: auto`); not when they are tied to one device."""
    spread = replace(config, gpus_per_node=100, audit=replace(config.audit, device="auto"))
    one = replace(spread, audit=replace(config.audit, device="cuda:0"))
    configs = {"spread": spread, "one": one}

    found = {k: discover(c, queue=Queue(), cursor=Cursor(), index_root=repo / "index") for k, c in configs.items()}

    assert "org/huge" in [i.model for i in found["spread"].queued]
    [huge] = [i for i in found["one"].skipped if i.model == "org/huge"]
    assert huge.code == "too_large" and "over the 1 GiB of the biggest node" in huge.message


def test_the_cursor_resumes_where_the_last_run_stopped(zoo, repo, config, hub, build_checkpoint):
    queue, cursor = Queue(), Cursor()
    seen = []
    for _ in range(3):
        found = discover(config, queue=queue, cursor=cursor, index_root=repo / "index", limit=4)
        seen.append(found.examined)
    assert seen == [4, 4, 2]  # ten models, four at a time
    assert len(queue.items) == 10
    assert discover(config, queue=queue, cursor=cursor, index_root=repo / "index").examined == 0

    newer = files_of(build_checkpoint("llama"))
    hub.add_model("org/newer", newer, card_data={"license": "mit"}, created_at=T0 + timedelta(hours=1))
    found = discover(config, queue=queue, cursor=cursor, index_root=repo / "index")
    assert found.examined == 1 and [i.model for i in found.queued] == ["org/newer"]
    assert len(cursor.spans) == 1 and cursor.spans[0].after is None  # everything up to now, examined


def test_cursor_survives_a_save_and_load(zoo, repo, config):
    from auditor.scheduler.discover import save_cursor

    cursor = Cursor()
    discover(config, queue=Queue(), cursor=cursor, index_root=repo / "index", limit=3)
    save_cursor(repo / "queue" / "cursor.yaml", cursor)
    assert load_cursor(repo / "queue" / "cursor.yaml") == cursor


def test_since_bounds_discovery(zoo, repo, config):
    found = discover(
        config,
        queue=Queue(),
        cursor=Cursor(),
        index_root=repo / "index",
        since=(T0 - timedelta(minutes=2, seconds=30)).date().isoformat(),
    )
    assert found.examined == 10  # the date is the same day: all ten are after its midnight
    found = discover(config, queue=Queue(), cursor=Cursor(), index_root=repo / "index", since="2027-01-01")
    assert found.examined == 0


def indexed(repo: Path, model: str, revision: str, record: MeasuredRecord, hashes: dict[str, str]) -> None:
    append_record(model, replace(record, revision=revision, weights_sha256=hashes or None), root=repo / "index")


def test_already_audited_and_identical_weights_are_not_downloaded(hub, repo, config, audit_result, build_checkpoint):
    good = files_of(build_checkpoint("llama"))
    audited = hub.add_model("org/audited", good, card_data={"license": "mit"}, created_at=T0)
    copy = hub.add_model("org/copy", good, card_data={"license": "mit"}, created_at=T0 + timedelta(minutes=1))
    lfs = {
        s.rfilename: s.lfs.sha256
        for s in __import__("huggingface_hub").model_info("org/audited", files_metadata=True).siblings
        if s.lfs
    }
    indexed(repo, "org/audited", audited, MeasuredRecord.from_audit(audit_result), lfs)
    hub.clear_requests()

    found = discover(config, queue=(queue := Queue()), cursor=Cursor(), index_root=repo / "index")

    assert found.already_audited == ["org/audited"]
    assert [(m, r, ref.model, ref.revision) for m, r, ref in found.same_weights] == [
        ("org/copy", copy, "org/audited", audited)
    ]
    assert queue.items == []
    [record] = lookup("org/copy", root=repo / "index")
    assert (record.source, record.same_weights_as.model, record.weights_sha256) == ("same_weights", "org/audited", lfs)
    assert not [r for r in hub.requests if r.path.endswith(".safetensors")]  # not one weight byte fetched


# -- requests ---------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [org/x\n", "did not find expected"),
        ("revision: main\n", "file: missing required field model"),
        ("model: org/x\ncolour: red\n", "file: unknown field colour"),
        ("model: not a model id\n", "model 'not a model id' is not a Hub model id (org/name)"),
        ("model: org/x\nrevision: 5\n", "revision: expected str | null, got int"),
        ("!!python/object/apply:os.system ['true']\n", "values are not allowed"),
    ],
)
def test_malformed_requests_say_what_to_fix(tmp_path, text, message):
    with pytest.raises(Ineligible) as e:
        read_request(write(tmp_path / "r.yaml", text))
    assert e.value.code == "invalid_request" and message in str(e.value)


def test_each_request_validation_failure(zoo, hub, repo, config, audit_result, build_checkpoint):
    hub.add_model("org/private", files_of(build_checkpoint("llama")), private=True, card_data={"license": "mit"})
    audited = zoo["org/good-base"]
    indexed(repo, "org/good-base", audited, MeasuredRecord.from_audit(audit_result), {})
    expected = {
        **EXPECTED_SKIPS,
        "org/missing": "not_found",
        "org/private": "not_found",
        "org/good-base": "already_audited",
    }
    for model, code in expected.items():
        with pytest.raises(Ineligible) as e:
            check_request(AuditRequest(model), config, index_root=repo / "index")
        assert e.value.code == code, (model, str(e.value))
    with pytest.raises(Ineligible) as e:
        check_request(AuditRequest("org/good-finetune", revision="no-such-branch"), config, index_root=repo / "index")
    assert e.value.code == "not_found"


def test_a_valid_request_is_pinned_to_a_commit(zoo, repo, config, hub, build_checkpoint):
    newer = hub.add_commit("org/good-finetune", files_of(build_checkpoint("llama", [])))
    pinned = check_request(AuditRequest("org/good-finetune"), config, index_root=repo / "index")
    assert pinned.revision == newer
    old = check_request(
        AuditRequest("org/good-finetune", revision=zoo["org/good-finetune"]), config, index_root=repo / "index"
    )
    assert old.revision == zoo["org/good-finetune"]


# -- runs -------------------------------------------------------------------------------------------


def test_a_run_takes_requests_first_then_discovered_models(zoo, hub, repo, config):
    write(repo / "requests" / "finetune.yaml", "model: org/good-finetune\nrequested_by: alice\nreason: check it\n")
    write(repo / "requests" / "gated.yaml", "model: org/gated\nrequested_by: bob\n")
    write(repo / "requests" / "broken.yaml", "model: [\n")

    report = run(repo, replace(config, run=replace(config.run, max_models=1)), log=lambda m: None)

    [(item, record)] = report.audited  # the request, although discovery ranks base models first
    assert (item.model, item.origin, item.requested_by) == ("org/good-finetune", "request", "alice")
    assert record.verdict == "confirmed" and [(w.layer, w.row, w.col) for w in record.super_weights] == [(2, 11, 50)]
    assert lookup("org/good-finetune", root=repo / "index") == [record]
    # Requests were taken into the queue and their files removed, except the broken one.
    assert sorted(p.name for p in (repo / "requests").iterdir()) == ["broken.yaml"]
    queue = load_queue(repo / "queue" / "queue.yaml")
    gated = queue.find("org/gated", zoo["org/gated"])
    assert (gated.state, gated.code, gated.origin, gated.requested_by) == ("skipped", "gated", "request", "bob")
    assert [i.model for i in queue.pending(config.priority)] == ["org/good-base"]
    assert not (repo / ".superweight" / "hub" / "models--org--good-finetune").exists()  # downloads cleaned up
    manifest = json.loads((repo / ".superweight" / "runs" / f"{report.run_id}.json").read_text())
    assert manifest["requests_taken"] == {
        "requests/finetune.yaml": git_blob_sha(b"model: org/good-finetune\nrequested_by: alice\nreason: check it\n"),
        "requests/gated.yaml": git_blob_sha(b"model: org/gated\nrequested_by: bob\n"),
    }
    updates = manifest["request_updates"]
    assert (updates["requests/finetune.yaml"]["state"], updates["requests/finetune.yaml"]["verdict"]) == (
        "done",
        "confirmed",
    )
    assert (updates["requests/gated.yaml"]["state"], updates["requests/gated.yaml"]["code"]) == ("skipped", "gated")
    summary = (repo / ".superweight" / "runs" / f"{report.run_id}.md").read_text()
    assert "| `org/good-finetune` |" in summary and "**confirmed**" in summary
    assert "`requests/broken.yaml`: `left in place" in summary and "`requests/gated.yaml`: `skipped (gated)" in summary


def test_failures_are_recorded_and_never_stop_the_run(zoo, hub, repo, config):
    hub.fail_next("*/org/good-base/resolve/*/model.safetensors", status=500, method="GET", times=50)

    report = run(repo, config, log=lambda m: None)

    assert [i.model for i, _ in report.audited] == ["org/good-finetune"]  # the run went on
    [retrying] = report.retrying  # a passing reason: the next run tries again (max_attempts 2)
    assert (retrying.model, retrying.code, retrying.attempts, retrying.state) == (
        "org/good-base",
        "download_error",
        1,
        "pending",
    )

    report = run(repo, config, log=lambda m: None)

    [failed] = report.failed
    assert (failed.model, failed.code, failed.attempts) == ("org/good-base", "download_error", 2)
    assert "500 Internal Server Error" in failed.message
    assert load_queue(repo / "queue" / "queue.yaml").find("org/good-base", zoo["org/good-base"]).state == "failed"


def test_a_download_hiccup_is_retried(zoo, hub, repo, config):
    hub.fail_next("*/org/good-base/resolve/*/model.safetensors", status=503, method="GET", times=2)
    hub.drop_next("*/org/good-base/resolve/*/tokenizer.json", after_bytes=50)

    report = run(repo, replace(config, run=replace(config.run, max_models=1)), log=lambda m: None)

    assert [i.model for i, _ in report.audited] == ["org/good-base"] and not report.failed


def test_a_timeout_ends_the_audit_not_the_run(zoo, repo, config):
    report = run(repo, replace(config, run=replace(config.run, timeout="0.5s")), log=lambda m: None)
    assert {(i.model, i.code) for i in report.failed} == {
        ("org/good-base", "timeout"),
        ("org/good-finetune", "timeout"),
    }


def test_one_run_at_a_time(repo, config):
    (repo / ".superweight").mkdir()
    with FileLock(repo / ".superweight-run.lock"), pytest.raises(RunInProgressError, match="one run at a time"):
        run(repo, config, log=lambda m: None)


def test_a_run_killed_mid_audit_is_finished_by_the_next(zoo, hub, repo, config, tmp_path):
    (repo / "auditor.yaml").write_text(
        f"licenses: [apache-2.0, mit]\nmemory_gib: 1\naudit: {{device: cpu, eval_text: {config.audit.eval_text}, "
        "max_tokens: 1024, seq_len: 256}\nrun: {max_models: 1}\n"
    )
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor.cli", "run", "--repo", str(repo)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    queue_file = repo / "queue" / "queue.yaml"
    deadline = time.monotonic() + 120
    while not (queue_file.exists() and "state: running" in queue_file.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "the run never started an audit"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the run only: its worker must die with it
    proc.wait()
    running = [i for i in load_queue(queue_file).items if i.state == "running"]
    assert [i.model for i in running] == ["org/good-base"]

    report = run(repo, load_config(repo / "auditor.yaml"), log=lambda m: None)

    assert [i.model for i in report.recovered] == ["org/good-base"]
    assert [i.model for i, _ in report.audited] == ["org/good-base"]
    assert len(lookup("org/good-base", root=repo / "index")) == 1
    assert not [i for i in load_queue(queue_file).items if i.state == "running"]
    report = run(repo, load_config(repo / "auditor.yaml"), log=lambda m: None)  # nothing is done twice
    assert [i.model for i, _ in report.audited] == ["org/good-finetune"]
    assert len(lookup("org/good-base", root=repo / "index")) == 1


def test_config_errors_are_one_line(tmp_path, capsys):
    from auditor.cli import main

    (tmp_path / "auditor.yaml").write_text("run: {timeout: soon}\n")
    assert main(["run", "--repo", str(tmp_path), "--config", str(tmp_path / "auditor.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    duration = "'soon' is not a duration (like 90s, 45m, 6h or 1d)"
    assert err == [f"superweight: error: {tmp_path / 'auditor.yaml'}: run.timeout: {duration}"]
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_request_validate_command(zoo, repo, capsys):
    from auditor.cli import main

    (repo / "auditor.yaml").write_text("licenses: [apache-2.0, mit]\nmemory_gib: 1\n")
    good = write(repo / "requests" / "good.yaml", "model: org/good-base\n")
    gated = write(repo / "requests" / "gated.yaml", "model: org/gated\n")

    assert main(["request", "validate", "--repo", str(repo), str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok: org/good-base pinned to {zoo['org/good-base']}\n"
    assert main(["request", "validate", "--repo", str(repo)]) == 1  # every file under requests/
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{gated}: gated: org/gated is gated")
    assert "1 of 2 request(s) valid" in err
    assert main(["request", "validate", "--repo", str(repo), "--json"]) == 1
    out, err = capsys.readouterr()
    assert [(r["file"], r["ok"]) for r in json.loads(out)] == [(str(gated), False), (str(good), True)]  # JSON alone
    assert "1 of 2 request(s) valid" in err


def test_discover_command_json(zoo, repo, capsys):
    from auditor.cli import main

    (repo / "auditor.yaml").write_text("licenses: [apache-2.0, mit]\nmemory_gib: 1\n")
    assert main(["discover", "--repo", str(repo), "--limit", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["examined"] == 3
    assert [i["model"] for i in data["queued"]] == ["org/good-base", "org/good-finetune"]
    assert [(i["model"], i["code"]) for i in data["skipped"]] == [("org/gated", "gated")]
    assert load_cursor(repo / "queue" / "cursor.yaml").spans  # the next run carries on from here
    assert len(load_queue(repo / "queue" / "queue.yaml").items) == 3


def test_a_request_the_hub_cannot_answer_for_stays_for_the_next_run(zoo, hub, repo, config):
    request = write(repo / "requests" / "finetune.yaml", "model: org/good-finetune\n")
    hub.fail_next("/api/models/org/good-finetune*", status=503, times=20)

    report = run(
        repo, replace(config, run=replace(config.run, max_models=0)), discover_models=False, log=lambda m: None
    )

    assert request.exists()  # a passing outage never drops a request
    assert report.requests[0][1].startswith("left in place, the Hub could not be asked")
    assert load_queue(repo / "queue" / "queue.yaml").items == []


def test_a_request_that_is_a_link_is_refused_unread(tmp_path):
    secret = write(tmp_path / "token", "hf_S3CR3T\n")
    (tmp_path / "evil.yaml").symlink_to(secret)
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for name in ("evil.yaml", "zero.yaml"):
        with pytest.raises(Ineligible, match="is a symbolic link; a request must be a plain file") as e:
            read_request(tmp_path / name)
        assert "S3CR3T" not in str(e.value)


def test_since_lets_discovery_stop_at_what_it_has_seen(zoo, repo, config, hub):
    queue, cursor = Queue(), Cursor()
    discover(config, queue=queue, cursor=cursor, index_root=repo / "index", since="2026-10-01")
    hub.clear_requests()

    again = discover(config, queue=queue, cursor=cursor, index_root=repo / "index", since="2026-10-01")

    assert again.examined == 0
    created = [r for r in hub.requests if r.path == "/api/models" and r.query["sort"] == ["createdAt"]]
    assert len(created) == 1  # one page, not the whole listing


def test_a_model_whose_hashes_cannot_be_read_is_queued_anyway(zoo, repo, config, hub):
    hub.fail_next("/api/models/org/good-base/revision/*", status=404)
    found = discover(config, queue=Queue(), cursor=Cursor(), index_root=repo / "index")
    base = next(i for i in found.queued if i.model == "org/good-base")
    assert base.weights_sha256 is None and len(found.queued) == 2


def test_the_config_comes_from_the_repository_not_the_working_directory(zoo, repo, capsys, tmp_path, monkeypatch):
    from auditor.cli import main

    (repo / "auditor.yaml").write_text("licenses: [mit]\nmemory_gib: 1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["discover", "--repo", str(repo), "--json"]) == 0
    assert [i["model"] for i in json.loads(capsys.readouterr().out)["queued"]] == ["org/good-finetune"]


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ("{seq_len: 0}", "audit: seq_len must be a whole number of at least 2, not 0"),
        ("{min_share: -1}", "audit: min_share must be a number, not negative, not -1"),
        ("{device: tpu}", "audit: device 'tpu' is not auto, cpu, cuda or cuda:N"),
    ],
)
def test_the_audit_section_is_checked(tmp_path, audit, message):
    (tmp_path / "auditor.yaml").write_text(f"audit: {audit}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "auditor.yaml")


def test_a_result_the_index_refuses_fails_that_model_only(zoo, repo, config, audit_result, monkeypatch):
    from auditor.index.entries import record_to_dict
    from auditor.scheduler import runner

    def fake_worker(item, config, paths, run_id):  # a real record, without the minute of real audits
        return {"record": record_to_dict(replace(MeasuredRecord.from_audit(audit_result), revision=item.revision))}

    real_append = runner.append_record

    def refuse_base(model, record, *, root):
        if model == "org/good-base":
            raise IndexValidationError([Problem("org/good-base.yaml", "refused for the test")])
        return real_append(model, record, root=root)

    monkeypatch.setattr(runner, "audit_in_worker", fake_worker)
    monkeypatch.setattr(runner, "append_record", refuse_base)

    report = run(repo, config, log=lambda m: None)

    assert [i.model for i, _ in report.audited] == ["org/good-finetune"]
    assert [(i.model, i.code) for i in report.failed] == [("org/good-base", "invalid_result")]


# -- what a second review found -----------------------------------------------------------------------


def fake_worker_for(audit_result, seen: list | None = None):
    """A worker that returns a real record without the minute of real audits (and notes what it audited)."""
    from auditor.index.entries import record_to_dict

    def worker(item, config, paths, run_id):
        if seen is not None:
            seen.append(item.model)
        return {"record": record_to_dict(replace(MeasuredRecord.from_audit(audit_result), revision=item.revision))}

    return worker


def test_a_request_for_an_id_the_hub_refuses_stays_and_the_run_goes_on(zoo, repo, config, audit_result, monkeypatch):
    from auditor.scheduler import runner

    monkeypatch.setattr(runner, "audit_in_worker", fake_worker_for(audit_result))
    write(repo / "requests" / "odd.yaml", "model: org/a--b\n")

    report = run(repo, config, discover_models=False, log=lambda m: None)

    assert (repo / "requests" / "odd.yaml").exists()
    [(_, outcome)] = report.requests
    assert outcome.startswith("left in place") and "'org/a--b' is not a valid Hub model id" in outcome


def test_metadata_of_an_unexpected_shape_skips_that_model_only(config):
    from types import SimpleNamespace

    from auditor.scheduler.eligibility import check_model

    odd = SimpleNamespace(id="org/odd", sha="a" * 40, private=False, disabled=False, gated=False, siblings=5)
    with pytest.raises(Ineligible) as e:
        check_model(odd, config)
    assert (e.value.code, e.value.revision) == ("bad_metadata", "a" * 40)
    assert "its metadata on the Hub cannot be read (TypeError" in str(e.value)


def test_discover_waits_for_no_one_and_never_writes_beside_a_run(zoo, repo, capsys):
    from auditor.cli import main

    (repo / ".superweight").mkdir()
    with FileLock(repo / ".superweight-run.lock"):
        assert main(["discover", "--repo", str(repo)]) == 1
    assert "one run at a time" in capsys.readouterr().err
    assert not (repo / "queue" / "queue.yaml").exists()


def test_a_run_killed_after_its_record_was_written_reports_it_done(zoo, repo, config, audit_result):
    from auditor.scheduler.queue import Item, save_queue

    revision = zoo["org/good-base"]
    indexed(repo, "org/good-base", revision, MeasuredRecord.from_audit(audit_result), {})
    item = Item("org/good-base", revision, "request", "running", "2026-11-22T00:00:00Z", "2026-11-22T00:00:00Z")
    save_queue(repo / "queue" / "queue.yaml", Queue([replace(item, attempts=2, request_files=["requests/a.yaml"])]))
    download = repo / ".superweight" / "hub" / "models--org--good-base"
    download.mkdir(parents=True)

    report = run(repo, config, discover_models=False, max_models=0, log=lambda m: None)

    assert [i.model for i, _ in report.audited] == ["org/good-base"] and report.recovered == []
    assert load_queue(repo / "queue" / "queue.yaml").items == [] and not download.exists()
    manifest = json.loads((repo / ".superweight" / "runs" / f"{report.run_id}.json").read_text())
    assert manifest["request_updates"]["requests/a.yaml"]["state"] == "done"  # the requester hears of it
    assert len(lookup("org/good-base", root=repo / "index")) == 1


def test_a_killed_audit_is_tried_again(zoo, repo, config, monkeypatch):

    real = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: real(["sh", "-c", "kill -KILL $$"], **kw))

    report = run(repo, replace(config, run=replace(config.run, max_models=1)), log=lambda m: None)

    [again] = report.retrying
    assert (again.code, again.state, again.attempts) == ("killed", "pending", 1)


def test_a_request_for_a_queued_or_failed_model_goes_first_and_tells_everyone(
    zoo, hub, repo, config, audit_result, monkeypatch
):
    from auditor.scheduler import runner
    from auditor.scheduler.queue import save_queue

    seen: list[str] = []
    monkeypatch.setattr(runner, "audit_in_worker", fake_worker_for(audit_result, seen))
    discover(config, queue=(queue := Queue()), cursor=Cursor(), index_root=repo / "index")
    finetune = queue.find("org/good-finetune", zoo["org/good-finetune"])
    queue.set(finetune, "failed", code="download_error", message="gave up", attempts=2)
    save_queue(repo / "queue" / "queue.yaml", queue)
    write(repo / "requests" / "alice.yaml", "model: org/good-finetune\nrequested_by: alice\n")
    write(repo / "requests" / "bob.yaml", "model: org/good-finetune\nrequested_by: bob\n")

    report = run(
        repo, replace(config, run=replace(config.run, max_models=1)), discover_models=False, log=lambda m: None
    )

    assert seen == ["org/good-finetune"]  # requested: before the base model that discovery ranks first
    manifest = json.loads((repo / ".superweight" / "runs" / f"{report.run_id}.json").read_text())
    updates = manifest["request_updates"]
    assert updates["requests/alice.yaml"]["state"] == updates["requests/bob.yaml"]["state"] == "done"


def test_a_request_for_identical_weights_downloads_nothing(hub, repo, config, audit_result, build_checkpoint):
    good = files_of(build_checkpoint("llama"))
    audited = hub.add_model("org/audited", good, card_data={"license": "mit"}, created_at=T0)
    hub.add_model("org/copy", good, card_data={"license": "mit"}, created_at=T0 + timedelta(minutes=1))
    from auditor.scheduler.discover import weight_hashes

    hashes = weight_hashes("org/audited", audited)
    indexed(repo, "org/audited", audited, MeasuredRecord.from_audit(audit_result), hashes)
    write(repo / "requests" / "copy.yaml", "model: org/copy\n")
    hub.clear_requests()

    report = run(repo, config, discover_models=False, log=lambda m: None)

    assert [(m, ref.model) for m, _, ref in report.same_weights] == [("org/copy", "org/audited")]
    assert not [r for r in hub.requests if r.path.endswith(".safetensors")]
    from auditor.publish import request_comment
    from auditor.scheduler.report import read_manifest

    [update] = read_manifest(repo / ".superweight" / "runs" / f"{report.run_id}.json").request_updates.values()
    assert (update.state, update.model, update.message) == ("same_weights", "org/copy", f"org/audited at {audited}")
    text = request_comment("requests/copy.yaml", update, "org/index", "main", None)
    assert f"recorded without an audit: its weight files are byte-identical to `org/audited at {audited}`'s" in text
    assert "https://github.com/org/index/blob/main/index/org/copy.yaml" in text  # the requester hears of it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run: {timeout: -1}\n", "run.timeout"),
        ("run: {time_budget: 0}\n", "run.time_budget: must be longer than nothing"),
        ("run: {keep_skipped: -3}\n", "run.keep_skipped: expected int >= 0"),
        ("discover: {since: '2026-13-45'}\n", "discover.since: '2026-13-45' is not a date"),
    ],
)
def test_values_that_cannot_work_are_refused_when_the_config_is_read(tmp_path, text, message):
    (tmp_path / "auditor.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "auditor.yaml")


def test_a_config_that_is_not_a_file_is_one_line(tmp_path):
    (tmp_path / "auditor.yaml").mkdir()
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "auditor.yaml")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--time-budget", "soon"], "argument --time-budget: 'soon' is not a duration"),
        (["discover", "--since", "yesterday"], "argument --since: 'yesterday' is not a date"),
    ],
)
def test_bad_command_line_values_are_refused_before_anything_runs(repo, capsys, argv, message):
    from auditor.cli import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--repo", str(repo)])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (repo / ".superweight").exists()


def test_two_runs_in_one_second_keep_their_own_records(repo):
    from auditor.scheduler.runner import new_run_id

    runs = repo / ".superweight" / "runs"
    runs.mkdir(parents=True)
    first = new_run_id(runs)
    (runs / f"{first}.json").write_text("{}")
    second = new_run_id(runs)
    assert second != first and second.startswith(first.removesuffix("Z"))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("cursor.yaml", "- a\n", "file: expected object, got array"),
        ("cursor.yaml", "schema_version: 1\nexamined: [{until: garbage}]\n", "examined\\[0\\].until: not a time"),
        ("queue.yaml", "schema_version: 1\nitems: [{downloads: x}]\n", "items.0"),
    ],
)
def test_a_damaged_cursor_or_queue_is_one_clear_error(repo, config, name, text, message):
    from auditor.scheduler.discover import CursorError
    from auditor.scheduler.queue import QueueError

    (repo / "queue" / name).write_text(text)
    with pytest.raises((CursorError, QueueError), match=message):
        (load_cursor if name == "cursor.yaml" else load_queue)(repo / "queue" / name)


def test_a_queue_listing_one_model_twice_is_refused(repo):
    from auditor.scheduler.queue import Item, QueueError, save_queue

    item = Item("org/m", "a" * 40, "discovered", "pending", "2026-11-22T00:00:00Z", "2026-11-22T00:00:00Z")
    save_queue(repo / "queue" / "queue.yaml", Queue([item, replace(item, state="failed")]))
    with pytest.raises(QueueError, match=r"org/m at a{40} is listed twice"):
        load_queue(repo / "queue" / "queue.yaml")


def test_a_new_commit_to_an_indexed_model_is_examined_again(zoo, hub, repo, config, audit_result, build_checkpoint):
    base = zoo["org/good-base"]
    older = replace(MeasuredRecord.from_audit(audit_result), tool_version="0.0.9")  # any version's record counts
    indexed(repo, "org/good-base", base, older, {})
    cursor = Cursor()
    discover(config, queue=Queue(), cursor=cursor, index_root=repo / "index", limit=1)  # the first run: a mark
    assert cursor.modified.spans and cursor.modified.spans[0].after is None

    new = hub.add_commit("org/good-base", files_of(build_checkpoint("llama", [Plant(2, 11, 50)])))
    found = discover(config, queue=(queue := Queue()), cursor=cursor, index_root=repo / "index", limit=1)

    # The new-model listing used up its budget of one; the changed model has a budget of its own.
    assert found.examined == 2 and ("org/good-base", new) in [(i.model, i.revision) for i in found.queued]
    assert queue.find("org/good-base", new).state == "pending" and new != base
    again = discover(config, queue=queue, cursor=cursor, index_root=repo / "index", limit=0)
    assert again.examined == 0  # seen once, not every run


def test_a_long_error_message_is_cut_to_what_the_queue_keeps(repo):
    from auditor.scheduler.queue import Item, save_queue

    item = Item("org/m", "a" * 40, "discovered", "failed", "2026-11-22T00:00:00Z", "2026-11-22T00:00:00Z")
    save_queue(repo / "queue" / "queue.yaml", Queue([replace(item, message="RuntimeError: " + "x" * 5000)]))
    [back] = load_queue(repo / "queue" / "queue.yaml").items
    assert len(back.message) == 4000 and back.message.endswith("…")


def test_one_list_of_failure_codes():
    """Every error's code is a Failure, and the same fact has the same code whoever finds it."""
    import auditor.github
    import auditor.scheduler.runner  # noqa: F401  (with the modules above: every module that defines an error)
    from auditor.errors import AuditorError, Failure, QuantizedModelError

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    errors = [AuditorError, *subclasses(AuditorError)]
    assert len(errors) > 20 and [e for e in errors if not isinstance(e.code, Failure)] == []
    assert QuantizedModelError.code == Failure.QUANTIZED == "quantized"
    assert f"{Failure.GATED}" == str(Failure.GATED) == "gated" and Failure.of("no such code") is Failure.ERROR


def test_a_queue_item_keeps_its_failure_code_typed_and_refuses_an_unknown_one(repo):
    from auditor.errors import Failure

    path = repo / "queue" / "queue.yaml"
    item = Item("org/m", "a" * 40, "discovered", "skipped", FROZEN, FROZEN, code=Failure.GATED, message="gated")
    save_queue(path, Queue([item]))
    assert "  code: gated\n" in path.read_text()
    assert load_queue(path).items[0].code is Failure.GATED
    path.write_text(path.read_text().replace("code: gated", "code: made_up"))
    with pytest.raises(QueueError, match="made_up"):
        load_queue(path)


def test_the_next_model_downloads_while_one_is_audited(zoo, repo, config, audit_result, monkeypatch):
    from auditor.scheduler import runner

    cache = repo / ".superweight" / "hub"
    seen = {}

    def worker(item, config, paths, run_id):  # the first waits, as a long audit would, for the next's weights
        pattern = "models--org--good-finetune/snapshots/*/model.safetensors"
        deadline = time.monotonic() + 60
        while item.model == "org/good-base" and not list(cache.glob(pattern)) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.setdefault(item.model, bool(list(cache.glob(pattern))))
        return fake_worker_for(audit_result)(item, config, paths, run_id)

    monkeypatch.setattr(runner, "audit_in_worker", worker)
    config = replace(config, run=replace(config.run, prefetch=True, max_models=2))

    report = run(repo, config, log=lambda m: None)

    assert [i.model for i, _ in report.audited] == ["org/good-base", "org/good-finetune"]
    assert seen["org/good-base"]  # the second model was on disk before the first audit ended
