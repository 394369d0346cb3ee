"""The scheduled job (`superweight run --publish`) under faults, end to end against the Hub and GitHub
stand-ins: publishing twice, kills at every step, a full or read-only disk, hostile names, two work dirs."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from fakegithub import FakeGitHub
from markdown_it import MarkdownIt
from msgspec.structs import replace
from scheduled import TOKEN, Job, add_models, fork_and_kill_at

from auditor.cli import main
from auditor.index import lookup
from auditor.scheduler import runner
from auditor.scheduler.lock import RunInProgressError
from auditor.scheduler.queue import load_queue

MODELS = ("org/alpha", "org/beta")


@pytest.fixture
def models(hub, build_checkpoint) -> dict[str, str]:
    return add_models(hub, build_checkpoint)


@pytest.fixture
def job(tmp_path, models, eval_text, audit_result, monkeypatch):
    with FakeGitHub(token=TOKEN) as gh:
        yield Job(tmp_path / "clone", gh, eval_text, audit_result, monkeypatch)


def test_publishing_with_nothing_new_writes_nothing_and_a_new_audit_updates_the_open_pull_request(job, models):
    first = job.request("org/alpha")
    assert job.run() == 0
    [pull] = job.bot_pulls()
    head = job.gh.branch_sha("org/index", pull.head)

    for _ in range(2):  # the cron job again, with nothing new: no commit, no pull request, no comment
        job.gh.clear_requests()
        assert job.run() == 0
        assert job.writes() == []
        assert [p.number for p in job.bot_pulls()] == [pull.number]
        assert job.gh.branch_sha("org/index", pull.head) == head
    assert len(job.status(first)) == 1

    second = job.request("org/beta")
    job.gh.clear_requests()
    assert job.run() == 0

    [same] = job.bot_pulls()  # the same pull request, one commit further
    assert same.number == pull.number and job.gh.commit("org/index", same.head).parents[0] == head
    assert same.title.startswith("Super Weight Index: 2 audited")
    for model in ("org/alpha", "org/beta"):  # its body lists every audit it holds, not the last run's only
        assert f"| `{model}` | `{models[model][:12]}` | **confirmed** |" in same.body
    files = job.gh.files_at("org/index", same.head)
    assert first not in files and second not in files  # both requests answered, their files deleted
    assert ("POST", "/repos/org/index/pulls") not in job.writes()
    assert [len(job.status(p)) for p in (first, second)] == [1, 1]
    assert all("audited: **confirmed**" in job.status(p)[0] for p in (first, second))


def test_publishing_the_same_run_again_adds_no_second_summary(job, models):
    job.request("org/alpha")
    assert job.run() == 0
    job.request("org/beta")  # merged on main meanwhile, not taken by a run yet

    assert main(["publish", "--repo", str(job.root)]) == 0

    [pull] = job.bot_pulls()
    assert pull.body.count("## Super Weight Index run ") == 1


def check_complete(job: Job, paths: list[str], models: dict[str, str], when: str = "") -> None:
    """After the run that follows a kill: each request answered once, each model audited once, the index
    and the pull request complete."""
    audited = Counter(job.audited.read_text().split())
    assert audited == Counter(MODELS), f"{when}: audits {dict(audited)}"
    for model in MODELS:
        assert [r.revision for r in lookup(model, root=job.root / "index")] == [models[model]]
    [pull] = job.bot_pulls()
    files = job.gh.files_at("org/index", pull.head)
    for model in MODELS:
        assert models[model] in files[f"index/{model}.yaml"].decode()
        assert f"| `{model}` | `{models[model][:12]}` | **confirmed** |" in pull.body
    for path in paths:
        assert path not in files  # answered: the pull request deletes it
        [status] = job.status(path)
        assert "audited: **confirmed**" in status
    assert list((job.root / "requests").iterdir()) == []  # and no temp file of a write that was cut short
    assert not [i for i in load_queue(job.root / "queue" / "queue.yaml").items if i.model in MODELS]
    assert list((job.root / "queue").glob(".*")) == []
    jobs = job.root / ".superweight" / "jobs"
    assert not jobs.exists() or list(jobs.iterdir()) == []  # no job file left behind


def test_a_job_killed_at_any_step_loses_nothing_and_repeats_nothing(tmp_path, models, eval_text, audit_result):
    """SIGKILL before each write of a run with two requests and publishing (counted on an undisturbed run),
    then the next scheduled run: checked after each."""

    def fresh(name: str, gh: FakeGitHub, mp) -> tuple[Job, list[str]]:
        job = Job(tmp_path / name / "clone", gh, eval_text, audit_result, mp)
        return job, [job.request(m) for m in MODELS]

    with FakeGitHub(token=TOKEN) as gh, pytest.MonkeyPatch.context() as mp:
        job, paths = fresh("undisturbed", gh, mp)
        steps = fork_and_kill_at(job, None)
        check_complete(job, paths, models)
    assert len(steps) > 30, steps  # sync, the run and the publish: every write of each is a step
    for step, what in enumerate(steps, 1):
        with FakeGitHub(token=TOKEN) as gh, pytest.MonkeyPatch.context() as mp:
            job, paths = fresh(f"kill-{step}", gh, mp)
            assert len(fork_and_kill_at(job, step)) == step
            assert job.run() == 0, f"the run after a kill at step {step} ({what})"
            check_complete(job, paths, models, f"killed at step {step}, before {what}")
            gh.clear_requests()
            assert job.run() == 0 and job.writes() == [], f"nothing more to do after a kill at step {step}"


# -- a full or read-only disk ------------------------------------------------------------------------


def test_a_full_disk_in_an_audit_puts_it_off_and_the_next_run_finishes(job, models, monkeypatch):
    paths = [job.request(m) for m in MODELS]
    full = {"error": {"code": "no_space", "message": "/srv/hub/blobs/x.incomplete: No space left on device"}}
    started = []

    def fills_the_disk(item, config, paths, run_id):
        started.append(item.model)
        partial = paths.hub_cache / f"models--{item.model.replace('/', '--')}" / "blobs" / "x.incomplete"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(b"\0" * 5000)  # what its download had written when the disk filled
        return full

    monkeypatch.setattr(runner, "audit_in_worker", fills_the_disk)

    assert job.run() == 0

    assert started == ["org/alpha"]  # the disk is full: no other audit is started
    alpha = next(i for i in load_queue(job.root / "queue" / "queue.yaml").items if i.model == "org/alpha")
    assert alpha.weight_bytes >= 5000  # what it really took, for the free-space check of the next runs
    assert not (job.root / ".superweight" / "hub" / "models--org--alpha").exists()  # and the space freed
    queue = load_queue(job.root / "queue" / "queue.yaml")
    for model in MODELS:  # nothing failed, no attempt used up: both wait for the next run
        item = next(i for i in queue.items if i.model == model)
        assert (item.state, item.attempts) == ("pending", 0)
    assert [s for p in paths for s in job.status(p)] and all("queued" in job.status(p)[0] for p in paths)
    [pull] = job.bot_pulls()
    assert "Stopped early" in pull.body and "no_space" in pull.body

    monkeypatch.setattr(runner, "audit_in_worker", job.worker)  # space was freed
    assert job.run() == 0
    check_complete(job, paths, models)


def test_the_worker_reports_a_full_disk_by_its_own_code(monkeypatch, tmp_path):
    from auditor import audit as audit_module
    from auditor.errors import HubError
    from auditor.scheduler import worker

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/srv/hub/blobs/abc.incomplete")
        except OSError as e:  # as huggingface_hub's download is wrapped by ours
            raise HubError("org/alpha: download failed") from e

    monkeypatch.setattr(audit_module, "audit", full)
    job = {"model": "org/alpha", "revision": "a" * 40, "settings": {}, "cache_dir": str(tmp_path)}
    assert worker.run_job(job) == {
        "error": {"code": "no_space", "message": "/srv/hub/blobs/abc.incomplete: No space left on device"}
    }

    (tmp_path / "job.json").write_text(json.dumps(job))
    refuse_writes(monkeypatch, tmp_path / "result.json", errno.EDQUOT)  # and its result cannot be written
    assert worker.DISK_STATUS[worker.main([str(tmp_path / "job.json"), str(tmp_path / "result.json")])] == "no_space"


def refuse_writes(monkeypatch, under: Path, code: int) -> None:
    """Every file replaced under `under` fails as on a full, over-quota, read-only or forbidden disk."""
    real = os.replace

    def replace(src, dst):
        if str(dst).startswith(str(under)):
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_a_state_file_that_cannot_be_written_stops_the_run_in_one_line_consuming_nothing(job, models, capsys, code):
    for model in MODELS:  # two requests on the runner
        (job.root / "requests" / f"{model.split('/')[1]}.yaml").write_text(f"model: {model}\n")
    with pytest.MonkeyPatch.context() as mp:
        refuse_writes(mp, job.root / "queue", code)
        assert main(["run", "--repo", str(job.root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"superweight: error: {job.root}/queue/queue.yaml: {os.strerror(code)}")
    assert sorted(p.name for p in (job.root / "requests").iterdir()) == ["alpha.yaml", "beta.yaml"]  # not consumed

    assert main(["run", "--repo", str(job.root)]) == 0  # the disk is fine again: nothing was lost
    assert list((job.root / "requests").iterdir()) == []
    assert {m for m in MODELS if lookup(m, root=job.root / "index")} == set(MODELS)


def test_an_index_that_cannot_be_written_keeps_the_result_for_the_next_run(job, models, capsys):
    job.request("org/alpha")
    with pytest.MonkeyPatch.context() as mp:
        refuse_writes(mp, job.root / "index", errno.EROFS)
        assert job.run("--no-discover") == 1
    assert f"{job.root}/index/org/alpha.yaml: Read-only file system" in capsys.readouterr().err

    assert job.run() == 0
    assert job.audited.read_text().split() == ["org/alpha"]  # recorded from the result kept, not audited again
    assert [r.revision for r in lookup("org/alpha", root=job.root / "index")] == [models["org/alpha"]]


def test_a_download_that_would_not_fit_is_put_off_before_it_starts(job, models, monkeypatch):
    from auditor.scheduler.config import load_config

    job.request("org/alpha")
    job.run()  # takes the request, audits it
    (job.root / "requests" / "beta.yaml").write_text("model: org/beta\n")
    config = load_config(job.root / "auditor.yaml")
    config = replace(config, run=replace(config.run, min_free_gib=1e9))  # no disk has a billion GiB free
    started = []
    monkeypatch.setattr(runner, "audit_in_worker", lambda item, *a: started.append(item) or {})

    report = runner.run(job.root, config, log=lambda m: None)

    assert started == []
    [item] = report.retrying
    assert (item.model, item.state, item.code, item.attempts) == ("org/beta", "pending", "no_space", 0)
    assert "GiB free in" in item.message and item.weight_bytes > 0  # the size the Hub lists


def test_a_kept_partial_download_counts_toward_the_space_it_needs(job, models):
    from auditor.scheduler.config import load_config
    from auditor.scheduler.queue import Item

    config = load_config(job.root / "auditor.yaml")
    paths = runner.RepoPaths.of(job.root, config)
    item = Item("org/alpha", "a" * 40, "request", "pending", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
    free = shutil.disk_usage(job.root).free
    item = replace(item, weight_bytes=free + 2**20)  # more than the disk has free...
    assert runner.lacks_space(paths, config, item) is not None
    kept = paths.hub_cache / "models--org--alpha" / "blobs" / "weights"
    kept.parent.mkdir(parents=True)
    with kept.open("wb") as f:  # ...but most of it is already here, from an attempt that was killed
        f.truncate(2**21)
    assert runner.lacks_space(paths, config, replace(item, weight_bytes=2**21)) is None


def test_a_permission_error_without_a_file_is_the_network_not_the_disk():
    from auditor.errors import resource_error

    try:
        try:
            raise PermissionError(errno.EPERM, "Operation not permitted")  # connect() refused by a firewall
        except OSError as e:
            raise ConnectionError("cannot reach the Hub") from e
    except ConnectionError as e:
        assert resource_error(e) is None
    read_only = PermissionError(errno.EACCES, "Permission denied", "/srv/hub/blobs/x")
    assert resource_error(read_only) is read_only


# -- hostile names, locks and leftovers ---------------------------------------------------------------


def live_markdown(text: str) -> list[str]:
    """What GitHub would render live in `text`: links, and text outside code spans (where mentions work)."""
    live = []
    for block in MarkdownIt("commonmark").enable("table").parse(text):
        if block.type == "html_block":
            assert block.content.count("-->") == 1 and block.content.rstrip().endswith("-->"), block.content
        for token in block.children or []:
            if token.type in ("link_open", "html_inline", "image"):
                live.append(token.type)
            elif token.type == "text":
                live.append(token.content)
    return live


def test_names_from_requesters_cannot_break_out_of_the_markdown(job, models):
    hostile = "x` @everyone [pwn](http:evil.example) --> <img src=x> ``z"
    path = job.request("org/alpha", name=hostile)
    assert job.run() == 0

    [status] = job.status(path)
    [pull] = job.bot_pulls()
    summary = next((job.root / ".superweight" / "runs").glob("*.md")).read_text()
    for text in (status, pull.body, summary):
        assert hostile.split("`")[1].strip() in text  # the name is shown...
        live = " ".join(live_markdown(text))
        assert "@everyone" not in live and "evil.example" not in live and "link_open" not in live  # ...inert
        assert "html_inline" not in live


def test_two_work_dirs_share_one_lock_per_clone(job, models):
    from auditor.scheduler.config import load_config
    from auditor.scheduler.lock import repo_lock

    config = load_config(job.root / "auditor.yaml")
    with repo_lock(job.root):
        for work_dir in (".superweight", "elsewhere", str(job.root.parent / "outside")):
            other = replace(config, run=replace(config.run, work_dir=work_dir))
            with pytest.raises(RunInProgressError, match="one run at a time"):
                runner.run(job.root, other, log=lambda m: None)
        assert main(["publish", "--repo", str(job.root)]) == 1  # publishing changes the clone too


def test_leftovers_of_killed_runs_are_cleared(job, models):
    jobs = job.root / ".superweight" / "jobs"
    jobs.mkdir(parents=True)
    stale = [jobs / "20200101T000000Z-org--x.json", job.root / "queue" / ".queue.yaml.abc123.tmp"]
    for path in stale:
        path.write_text("{}")
    assert main(["run", "--repo", str(job.root)]) == 0
    assert not any(p.exists() for p in stale)
