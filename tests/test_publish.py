"""Publishing runs to GitHub through its REST API, against the local GitHub stand-in."""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import time
from pathlib import Path

import pytest
import requests
from conftest import FROZEN
from fakegithub import FakeGitHub
from msgspec.structs import replace

from auditor.cli import main
from auditor.fileio import git_blob_sha
from auditor.github import GitHub, GitHubError
from auditor.index import MeasuredRecord, append_record, lookup
from auditor.publish import MARKER, publish, sync
from auditor.scheduler.queue import Item, Queue, save_queue
from auditor.scheduler.report import RunReport, manifest_of, read_manifest, write_manifest
from auditor.scheduler.summary import render

REPO = Path(__file__).resolve().parent.parent
TOKEN = "ghp_" + "S3cr3tT0k3n" * 3
REQUEST = "requests/demo--tiny-llama.yaml"
REQUEST_TEXT = b"model: demo/tiny-llama\n"
REQUEST_SHA = git_blob_sha(REQUEST_TEXT)


@pytest.fixture
def gh_server():
    with FakeGitHub(token=TOKEN) as server:
        files = {p.relative_to(REPO).as_posix(): p.read_bytes() for p in (REPO / "index").rglob("*") if p.is_file()}
        server.add_repo("org/index", {**files, "README.md": b"# index\n"})
        # A requester's pull request adds a request file, and a maintainer merges it.
        server.add_commit("org/index", {REQUEST: REQUEST_TEXT}, branch="alice/request")
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {server.add_user('alice')}"
        pr = api.post(
            f"{server.url}/repos/org/index/pulls",
            json={"title": "Audit demo/tiny-llama", "head": "alice/request", "base": "main"},
        ).json()
        server.merge_pull("org/index", pr["number"])
        server.request_pull = pr["number"]
        server.clear_requests()
        yield server


def client(server: FakeGitHub, **kw) -> GitHub:
    return GitHub("org/index", TOKEN, api_url=server.url, **{"write_interval": 0.0, **kw})


def write_run(root: Path, run_id: str, record: MeasuredRecord, *, audited: bool = True) -> None:
    """What a run leaves on disk, made by the runner's own code: its index record, the queue, the request
    file gone, its summary and manifest."""
    if audited:
        append_record("demo/tiny-llama", record, root=root / "index")
    queue = Queue([Item("org/waiting", "c" * 40, "discovered", "pending", FROZEN, FROZEN)])
    save_queue(root / "queue" / "queue.yaml", queue)
    report = RunReport(run_id, FROZEN, FROZEN, requests=[(REQUEST, "queued")], taken=[(REQUEST, REQUEST_SHA)])
    if audited:
        item = Item("demo/tiny-llama", record.revision, "request", "done", FROZEN, FROZEN, request_files=[REQUEST])
        report.audited.append((item, record))
    write_manifest(root / ".superweight" / "runs" / f"{run_id}.json", manifest_of(report, queue, render(report)))


@pytest.fixture
def local(tmp_path, audit_result) -> Path:
    root = tmp_path / "clone"
    shutil.copytree(REPO / "index", root / "index")
    (root / "requests").mkdir()
    write_run(root, "20261122T070000Z", MeasuredRecord.from_audit(audit_result))
    return root


def shape(path: str) -> str:
    """A request path with shas, run ids and numbers blanked, to compare call sequences."""
    path = re.sub(r"[0-9a-f]{40}", "SHA", path)
    return re.sub(r"^(pulls|issues)/\d+", r"\1/N", path.removeprefix("/repos/org/index/"))


def test_the_call_sequence_of_a_publish(gh_server, local, audit_result):
    result = publish(local, client(gh_server))

    calls = [(r.method, shape(r.path)) for r in gh_server.requests]
    assert calls == [
        ("GET", "git/ref/heads/main"),
        ("GET", "git/commits/SHA"),
        ("GET", "git/trees/SHA"),
        ("GET", "pulls"),  # open bot pull requests: none yet
        ("POST", "git/trees"),  # the changed text files inline: one write, however many there are
        ("GET", "git/ref/heads/superweight/run-20261122T070000Z"),
        ("POST", "git/commits"),
        ("GET", "git/ref/heads/superweight/run-20261122T070000Z"),
        ("POST", "git/refs"),
        ("POST", "pulls"),
        ("POST", "issues/N/labels"),
        ("GET", "git/matching-refs/heads/superweight/run-"),
        ("GET", "commits"),
        ("GET", "commits/SHA/pulls"),
        ("GET", "/user"),  # whose pull request and comments are the bot's own
        ("GET", "issues/N/comments"),
        ("POST", "issues/N/comments"),
    ]
    assert all(
        r.headers["accept"] == "application/vnd.github+json" and r.api_version == "2022-11-28"
        for r in gh_server.requests
    )
    assert result.changed == ["index/demo/tiny-llama.yaml", "queue/queue.yaml"]
    assert result.deleted == [REQUEST]

    files = gh_server.files_at("org/index", "superweight/run-20261122T070000Z")
    assert files["index/demo/tiny-llama.yaml"] == (local / "index/demo/tiny-llama.yaml").read_bytes()
    assert REQUEST not in files and "index/huggyllama/llama-7b.yaml" in files
    [pull] = gh_server.pulls("org/index")[1:]
    assert pull.title == "Super Weight Index: 1 audited, 0 identical weights (run 20261122T070000Z)"
    assert pull.body.startswith(f"## {pull.title}") and pull.base == "main"
    assert f"| `demo/tiny-llama` | `{audit_result.info.revision[:12]}` | **confirmed** |" in pull.body
    assert "## Super Weight Index run 20261122T070000Z" in pull.body  # the run's own summary follows
    assert gh_server.labels("org/index", pull.number) == ["audit-results", "superweight-bot"]
    [comment] = gh_server.comments("org/index", gh_server.request_pull)
    assert comment.body.startswith(MARKER.format(file=REQUEST))
    assert "audited: **confirmed**. Super weights: layer 1 [7, 33]." in comment.body
    assert "https://github.com/org/index/blob/main/index/demo/tiny-llama.yaml" in comment.body


def test_publishing_the_same_run_twice_updates_and_never_duplicates(gh_server, local):
    first = publish(local, client(gh_server))
    gh_server.clear_requests()

    second = publish(local, client(gh_server))

    assert (second.pull, second.commit) == (first.pull, first.commit)  # the same commit, reused
    assert len([p for p in gh_server.pulls("org/index") if p.head.startswith("superweight/")]) == 1
    assert len(gh_server.comments("org/index", gh_server.request_pull)) == 1
    writes = [(r.method, shape(r.path)) for r in gh_server.requests if r.method != "GET"]
    assert ("POST", "pulls") not in writes and ("POST", "git/commits") not in writes
    assert ("POST", "issues/N/comments") not in writes  # unchanged text: not even an edit

    path = local / ".superweight/runs/20261122T070000Z.json"
    manifest = read_manifest(path)
    manifest.request_updates[REQUEST] = replace(manifest.request_updates[REQUEST], verdict="not_confirmed")
    write_manifest(path, manifest)
    publish(local, client(gh_server))
    [comment] = gh_server.comments("org/index", gh_server.request_pull)
    assert "**not_confirmed**" in comment.body  # edited in place


def test_a_publish_that_fails_halfway_is_repaired_by_the_next(gh_server, local, audit_result):
    gh_server.fail_from("/repos/org/index/pulls", status=502, method="POST")
    with pytest.raises(GitHubError, match="502"):
        publish(local, client(gh_server, max_retries=1))
    assert "superweight/run-20261122T070000Z" in str(gh_server.refs("org/index"))  # a branch, no pull request
    gh_server.reset_faults()

    # The next run is published instead: it carries the failed run's changes, and tidies its branch away.
    later = replace(MeasuredRecord.from_audit(audit_result), revision="d" * 40)
    write_run(local, "20261122T080000Z", later)
    result = publish(local, client(gh_server))

    refs = gh_server.refs("org/index")
    assert "refs/heads/superweight/run-20261122T080000Z" in refs
    assert "refs/heads/superweight/run-20261122T070000Z" not in refs
    files = gh_server.files_at("org/index", "superweight/run-20261122T080000Z")
    revisions = {r.revision for r in lookup("demo/tiny-llama", root=local / "index")}
    assert all(rev in files["index/demo/tiny-llama.yaml"].decode() for rev in revisions)
    assert [p.number for p in gh_server.pulls("org/index") if p.state == "open"] == [result.pull]


def test_a_newer_run_adds_a_commit_to_the_open_pull_request(gh_server, local, audit_result):
    first = publish(local, client(gh_server))
    later = replace(MeasuredRecord.from_audit(audit_result), revision="d" * 40)
    write_run(local, "20261122T080000Z", later)

    second = publish(local, client(gh_server))

    assert (second.pull, second.branch, second.committed) == (first.pull, first.branch, True)
    assert [p.number for p in gh_server.pulls("org/index") if p.state == "open"] == [first.pull]
    assert list(gh_server.commit("org/index", first.branch).parents) == [first.commit]  # a fast-forward
    [pull] = [p for p in gh_server.pulls("org/index") if p.number == first.pull]
    assert (
        pull.title == "Super Weight Index: 2 audited, 0 identical weights (runs 20261122T070000Z to 20261122T080000Z)"
    )
    for revision in (audit_result.info.revision, "d" * 40):  # every audit the pull request holds, not the last run's
        assert f"| `demo/tiny-llama` | `{revision[:12]}` |" in pull.body
    assert "run 20261122T070000Z" in pull.body and "run 20261122T080000Z" in pull.body


def open_bot_pull(gh_server, local: Path, record: MeasuredRecord, run_id: str) -> int:
    """A second open bot pull request (published from another clone, say), adding `record`."""
    elsewhere = local.parent / f"elsewhere-{run_id}"
    append_record("demo/tiny-llama", record, root=elsewhere / "index")
    text = (elsewhere / "index/demo/tiny-llama.yaml").read_bytes()
    gh_server.add_commit("org/index", {"index/demo/tiny-llama.yaml": text}, branch=f"superweight/run-{run_id}")
    return requests.post(
        f"{gh_server.url}/repos/org/index/pulls",
        json={"title": "run", "head": f"superweight/run-{run_id}", "base": "main"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()["number"]


def test_other_open_bot_pull_requests_are_superseded(gh_server, local, audit_result):
    first = publish(local, client(gh_server))
    newer = open_bot_pull(gh_server, local, replace(MeasuredRecord.from_audit(audit_result), revision="d" * 40), "X")
    write_run(local, "20261122T080000Z", replace(MeasuredRecord.from_audit(audit_result), revision="e" * 40))

    second = publish(local, client(gh_server))

    states = {p.number: p.state for p in gh_server.pulls("org/index")}
    assert second.pull == newer and second.closed == [first.pull]
    assert (states[first.pull], states[newer]) == ("closed", "open")
    assert "Superseded by" in gh_server.comments("org/index", first.pull)[-1].body
    assert "refs/heads/superweight/run-20261122T070000Z" not in gh_server.refs("org/index")
    held = gh_server.files_at("org/index", second.branch)["index/demo/tiny-llama.yaml"].decode()
    assert all(rev in held for rev in (audit_result.info.revision, "d" * 40, "e" * 40))


def test_records_added_on_github_meanwhile_are_merged_not_lost(gh_server, local, audit_result):
    elsewhere = replace(MeasuredRecord.from_audit(audit_result), revision="e" * 40, date="2026-11-01T00:00:00Z")
    other = local.parent / "other"
    append_record("demo/tiny-llama", elsewhere, root=other / "index")
    gh_server.add_commit(
        "org/index", {"index/demo/tiny-llama.yaml": (other / "index/demo/tiny-llama.yaml").read_bytes()}
    )

    publish(local, client(gh_server))

    merged = gh_server.files_at("org/index", "superweight/run-20261122T070000Z")["index/demo/tiny-llama.yaml"].decode()
    assert "e" * 40 in merged and audit_result.info.revision in merged
    assert len(lookup("demo/tiny-llama", root=local / "index")) == 2  # the local copy caught up too


def test_rate_limits_are_respected(gh_server, local):
    slept = []
    gh_server.secondary_rate_limit(pattern="/repos/org/index/git/trees", method="POST", retry_after=1)
    publish(local, client(gh_server, sleep=lambda s: (slept.append(s), time.sleep(s))))

    trees = [r for r in gh_server.requests if r.method == "POST" and r.path.endswith("/git/trees")]
    assert trees[0].status == 403 and trees[1].status == 201
    assert trees[1].time - trees[0].time >= 1.0 and 1.0 in slept


def test_a_secondary_limit_without_retry_after_waits_a_minute(gh_server, local):
    slept = []
    gh_server.secondary_rate_limit(pattern="/repos/org/index/git/trees", method="POST", retry_after=None, times=2)
    publish(local, client(gh_server, sleep=slept.append))
    # as GitHub asks: at least a minute, then exponentially longer (plus a few seconds of jitter, never less)
    assert 60.0 <= slept[0] <= 65.0 and 120.0 <= slept[1] <= 125.0


def test_an_exhausted_primary_limit_is_waited_out(gh_server, local):
    gh_server.rate_limit, gh_server.rate_limit_window = 12, 2.0
    other = requests.Session()  # someone else used up the limit
    for _ in range(12):
        other.get(f"{gh_server.url}/repos/org/index", headers={"Authorization": f"Bearer {TOKEN}"})
    gh_server.clear_requests()
    slept = []

    publish(local, client(gh_server, sleep=lambda s: (slept.append(s), time.sleep(s))))

    statuses = [r.status for r in gh_server.requests]
    assert statuses[0] == 403  # refused, then waited out until the reset...
    assert statuses.count(403) == 1  # ...and afterwards the client waited before running out again
    assert len(slept) >= 2 and max(slept) <= 4.5  # the window is 2 s, plus a second of margin


def test_writes_are_spaced(gh_server, local):
    publish(local, client(gh_server, write_interval=0.2))
    writes = [r.time for r in gh_server.requests if r.method != "GET"]
    assert min(b - a for a, b in itertools.pairwise(writes)) >= 0.19


def test_the_token_never_appears(gh_server, local, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SUPERWEIGHT_GITHUB_TOKEN", TOKEN)
    (local / "auditor.yaml").write_text(f"github: {{repo: org/index, api_url: '{gh_server.url}', write_interval: 0}}\n")
    argv = ["publish", "--repo", str(local), "--config", str(local / "auditor.yaml")]
    assert main(argv) == 0
    gh_server.fail_from("*", status=401)  # refused credentials: where a careless client would echo them
    assert main(argv) == 1  # and again, failing: the error message must not carry it either
    out, err = capsys.readouterr()
    assert "published run 20261122T070000Z" in out and "superweight: error:" in err
    assert TOKEN not in out + err + caplog.text
    assert TOKEN not in repr(client(gh_server))


def test_without_a_token_nothing_remote_changes(gh_server, local, capsys, monkeypatch):
    for name in ("SUPERWEIGHT_GITHUB_TOKEN", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(["publish", "--repo", str(local)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("No GitHub token") and "superweight/run-20261122T070000Z" in out
    assert f"Would comment on the pull request of {REQUEST}: done" in out
    assert gh_server.requests == []


def test_no_run_to_publish(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SUPERWEIGHT_GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    assert main(["publish", "--repo", str(tmp_path)]) == 1
    assert "no run to publish" in capsys.readouterr().err


def test_a_new_request_that_reuses_an_old_name_is_not_deleted(gh_server, local):
    publish(local, client(gh_server))
    again = b"model: demo/tiny-llama\nreason: audit it again, please\n"
    gh_server.add_commit("org/index", {REQUEST: again})  # merged meanwhile, not taken by any run yet
    manifest = read_manifest(local / ".superweight/runs/20261122T070000Z.json")
    manifest.run_id = "20261122T080000Z"
    write_manifest(local / ".superweight/runs/20261122T080000Z.json", manifest)

    result = publish(local, client(gh_server))

    assert REQUEST not in result.deleted
    assert gh_server.files_at("org/index", result.branch)[REQUEST] == again


def test_sync_brings_the_runner_up_to_date_without_git(gh_server, local, audit_result):
    elsewhere = replace(MeasuredRecord.from_audit(audit_result), revision="e" * 40, date="2026-11-01T00:00:00Z")
    other = local.parent / "other"
    append_record("demo/tiny-llama", elsewhere, root=other / "index")
    gh_server.add_commit(
        "org/index",
        {
            "index/demo/tiny-llama.yaml": (other / "index/demo/tiny-llama.yaml").read_bytes(),
            "requests/new--model.yaml": b"model: new/model\n",
            "auditor.yaml": b"memory_gib: 40\n",
        },
    )

    done = sync(local, client(gh_server))

    assert done.merged == ["index/demo/tiny-llama.yaml"] and done.config
    assert {r.revision for r in lookup("demo/tiny-llama", root=local / "index")} == {
        "e" * 40,
        audit_result.info.revision,
    }
    assert done.requests == ["requests/new--model.yaml"]  # the one taken before (REQUEST) is not fetched again
    assert not (local / REQUEST).exists() and (local / "auditor.yaml").read_text() == "memory_gib: 40\n"
    assert sync(local, client(gh_server)).requests == []  # nothing twice


def test_a_clone_that_lost_its_state_keeps_the_open_pull_requests_records(gh_server, local, audit_result):
    first = publish(local, client(gh_server))
    # The runner's clone lost its state (a new machine): only main's index, and a new run.
    shutil.rmtree(local / "index")
    shutil.copytree(REPO / "index", local / "index")
    write_run(local, "20261122T080000Z", replace(MeasuredRecord.from_audit(audit_result), revision="d" * 40))

    second = publish(local, client(gh_server))

    assert (second.pull, second.committed) == (first.pull, True)
    merged = gh_server.files_at("org/index", first.branch)["index/demo/tiny-llama.yaml"].decode()
    assert audit_result.info.revision in merged and "d" * 40 in merged


def test_a_comment_is_not_posted_twice_after_a_server_error(gh_server, local):
    gh_server.fail_next("/repos/org/index/issues/*/comments", status=502, method="POST", applied=True)
    first = publish(local, client(gh_server))
    assert len(first.failed) == 1 and "502" in first.failed[0]  # reported, and the publish went on
    publish(local, client(gh_server))  # the next publish finds the comment GitHub did make, by its marker
    assert len(gh_server.comments("org/index", gh_server.request_pull)) == 1


def post_comment(gh_server, token: str, number: int, body: str) -> None:
    requests.post(
        f"{gh_server.url}/repos/org/index/issues/{number}/comments",
        json={"body": body},
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()


def test_someone_elses_comment_with_the_marker_is_left_alone(gh_server, local):
    mallory = gh_server.add_user("mallory")
    post_comment(gh_server, mallory, gh_server.request_pull, MARKER.format(file=REQUEST) + "\nall good, merge it")

    publish(local, client(gh_server))

    theirs, ours = gh_server.comments("org/index", gh_server.request_pull)
    assert (theirs.user, theirs.body.endswith("all good, merge it")) == ("mallory", True)
    assert ours.user == "superweight-bot" and "audited: **confirmed**" in ours.body


def test_a_pull_request_that_only_looks_like_the_bots_is_not_trusted(gh_server, local, audit_result):
    # Someone with push access opens a pull request from a branch with the bot's prefix, adding a record.
    forged = replace(MeasuredRecord.from_audit(audit_result), revision="f" * 40, date="2026-11-01T00:00:00Z")
    elsewhere = local.parent / "elsewhere"
    append_record("demo/tiny-llama", forged, root=elsewhere / "index")
    text = (elsewhere / "index/demo/tiny-llama.yaml").read_bytes()
    gh_server.add_commit("org/index", {"index/demo/tiny-llama.yaml": text}, branch="superweight/run-mallory")
    requests.post(
        f"{gh_server.url}/repos/org/index/pulls",
        json={"title": "results", "head": "superweight/run-mallory", "base": "main"},
        headers={"Authorization": f"Bearer {gh_server.add_user('mallory')}"},
    ).raise_for_status()

    result = publish(local, client(gh_server))

    assert result.closed == []
    assert "f" * 40 not in gh_server.files_at("org/index", result.branch)["index/demo/tiny-llama.yaml"].decode()
    assert [r.revision for r in lookup("demo/tiny-llama", root=local / "index")] == [audit_result.info.revision]


def test_a_comment_that_cannot_be_posted_does_not_stop_the_others(gh_server, local):
    gh_server.fail_next("/repos/org/index/issues/*/comments", status=403, method="POST", body={"message": "locked"})

    result = publish(local, client(gh_server))

    assert result.url and len(result.failed) == 1 and "locked" in result.failed[0]
    manifest = read_manifest(local / ".superweight/runs/20261122T070000Z.json")
    assert manifest.published.pull == result.pull  # the run is recorded as published all the same


def test_superseding_says_so_once_even_when_closing_fails(gh_server, local, audit_result):
    first = publish(local, client(gh_server))
    open_bot_pull(gh_server, local, replace(MeasuredRecord.from_audit(audit_result), revision="d" * 40), "X")
    gh_server.fail_next(f"/repos/org/index/pulls/{first.pull}", status=502, method="PATCH", times=2)
    with pytest.raises(GitHubError, match="502"):
        publish(local, client(gh_server, max_retries=1))

    publish(local, client(gh_server))

    notes = [c for c in gh_server.comments("org/index", first.pull) if "Superseded by" in c.body]
    assert len(notes) == 1 and gh_server.pulls("org/index")[first.pull - 1].state == "closed"


def test_a_delete_that_went_through_before_its_answer_was_lost(gh_server, local, audit_result):
    first = publish(local, client(gh_server))
    open_bot_pull(gh_server, local, replace(MeasuredRecord.from_audit(audit_result), revision="d" * 40), "X")
    gh_server.fail_next("/repos/org/index/git/refs/heads/*", status=502, method="DELETE", applied=True)

    publish(local, client(gh_server))  # the retried DELETE finds the branch gone: that is success

    assert f"refs/heads/{first.branch}" not in gh_server.refs("org/index")


def test_list_pages_stay_linked_when_served_from_the_etag_cache(gh_server, local):
    alice = gh_server.add_user("alice")
    for i in range(120):  # a busy pull request: its comments take two pages
        post_comment(gh_server, alice, gh_server.request_pull, f"comment {i}")
    gh = client(gh_server)

    publish(local, gh)
    publish(local, gh)  # the same client: the first page now comes back 304, from the cache

    ours = [c for c in gh_server.comments("org/index", gh_server.request_pull) if c.user == "superweight-bot"]
    assert len(ours) == 1


def test_a_long_summary_is_cut_to_fit_a_pull_request(gh_server, local):
    path = local / ".superweight/runs/20261122T070000Z.json"
    manifest = read_manifest(path)
    manifest.summary += "".join(f"| org/model-{i} | failed | download_error |\n" for i in range(3000))
    write_manifest(path, manifest)

    result = publish(local, client(gh_server))

    [pull] = [p for p in gh_server.pulls("org/index") if p.number == result.pull]
    assert len(pull.body) <= 65_536 and "cut to fit GitHub's limit" in pull.body


def test_an_invalid_index_file_on_github_is_not_merged_and_does_not_stop_a_publish(gh_server, local, caplog):
    gh_server.add_commit("org/index", {"index/x/y.yaml": b"model: x/y\n"})
    result = publish(local, client(gh_server))
    assert result.url and not (local / "index/x/y.yaml").exists()
    assert "index/x/y.yaml on GitHub was not merged" in caplog.text


def test_links_under_the_published_folders_are_not_followed(gh_server, local, tmp_path):
    secret = tmp_path / "id_ed25519"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    (local / "queue" / "notes.yaml").symlink_to(secret)
    (local / "index" / "linked").symlink_to(tmp_path, target_is_directory=True)

    result = publish(local, client(gh_server))

    files = gh_server.files_at("org/index", result.branch)
    assert "queue/notes.yaml" not in files and not any(f.startswith("index/linked/") for f in files)


def test_a_tree_too_large_to_list_stops_the_publish(gh_server, local):
    gh_server.fail_next(
        "/repos/org/index/git/trees/*", status=200, method="GET", body={"sha": "0" * 40, "tree": [], "truncated": True}
    )
    with pytest.raises(GitHubError, match="too large for GitHub to list whole"):
        publish(local, client(gh_server))


def test_a_deleted_accounts_comments_and_pull_requests_are_passed_over():
    from auditor.publish import comment, is_bots, request_pull

    class Stub:  # GitHub sends "user": null for a deleted account ("ghost")
        repo, login = "org/index", "superweight-bot"

        def __init__(self):
            self.posted = []

        def paginate(self, endpoint, **params):
            if endpoint == "commits":
                return [{"sha": "a" * 40}]
            return [{"id": 1, "user": None, "body": MARKER.format(file=REQUEST) + "\nold"}]

        def get(self, endpoint, **params):
            return [{"number": 7, "user": None, "head": {"ref": "x", "repo": None}}]

        def post(self, endpoint, body, **kw):
            self.posted.append((endpoint, body))

    gh = Stub()
    comment(gh, 1, MARKER.format(file=REQUEST), "new")
    assert gh.posted == [("issues/1/comments", {"body": "new"})]  # a comment of its own, not the ghost's
    assert request_pull(gh, REQUEST, "main") == 7
    assert not is_bots(gh, {"user": None, "head": {"ref": "superweight/run-1", "repo": None}})


def test_the_runs_manifest_is_typed_and_a_damaged_one_is_one_clear_error(local, capsys):
    from auditor.errors import Failure
    from auditor.scheduler.report import ManifestError, RequestUpdate

    path = local / ".superweight/runs/20261122T070000Z.json"
    manifest = read_manifest(path)
    assert manifest.requests_taken == {REQUEST: REQUEST_SHA}
    done = manifest.request_updates[REQUEST]
    assert isinstance(done, RequestUpdate) and (done.state, done.verdict, done.super_weights) == (
        "done",
        "confirmed",
        [[1, 7, 33, None]],
    )
    failed = RequestUpdate("failed", "org/m", "a" * 40, Failure.GATED, "gated")
    manifest.request_updates["requests/other.yaml"] = failed
    write_manifest(path, manifest)
    assert read_manifest(path).request_updates["requests/other.yaml"] == failed  # the code comes back typed

    path.write_text(path.read_text().replace('"audited"', '"audited_models"'))
    with pytest.raises(ManifestError, match=r"20261122T070000Z.json: not a run manifest this version can read"):
        read_manifest(path)
    assert main(["publish", "--repo", str(local)]) == 1
    assert capsys.readouterr().err.startswith("superweight: error: ")
