"""Publishing a run to GitHub through the REST API: one commit, one pull request, status comments.

`publish(root, gh)` makes the repository on GitHub catch up with what the runner holds locally:

1. It reads main's tree. It then compares the bot's files with it: `index/` and `queue/` are added or
   updated (never deleted), and request files the runs took are deleted. An index file that changed on
   main as well is merged first: its records are append-only, so the union is kept locally and remotely.
2. It commits every change at once through the Git Data API (blobs, tree, commit), on a branch named after
   the run, `superweight/run-<id>`, created or moved to that commit.
3. It opens the run's pull request, or updates it when the same run is published again, with the run
   summary as its body and the bot's labels.
4. It closes older bot pull requests (this one contains their changes) and deletes bot branches that have
   no open pull request: the leftovers of a publish that failed halfway.
5. It posts, or updates in place (a hidden marker finds it), one status comment on each request's pull
   request: queued, audited (with the result and a link to the index entry), or not audited and why.

Every step can be repeated: publishing the same run twice changes nothing the second time but the
comment and pull-request text, and a failure at any step is repaired by the next publish.
Without a token, nothing remote is touched: `plan_offline` says what would be done.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .fileio import atomic_write
from .github import GitHub, GitHubError

log = logging.getLogger(__name__)

BRANCH_PREFIX = "superweight/run-"
LABELS = ["superweight-bot", "audit-results"]
SYNCED = ("index/", "queue/")
MARKER = "<!-- superweight:request-status {file} -->"


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Published:
    run_id: str
    branch: str
    commit: str | None = None
    pull: int | None = None
    url: str | None = None
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)


def runs_dir(root: Path, work_dir: str = ".superweight") -> Path:
    return root / work_dir / "runs"


def load_manifest(root: Path, run_id: str | None = None, work_dir: str = ".superweight") -> dict:
    runs = runs_dir(root, work_dir)
    paths = sorted(runs.glob("*.json")) if runs.is_dir() else []
    if run_id is not None:
        paths = [p for p in paths if p.stem == run_id]
    if not paths:
        raise GitHubError(f"no run {run_id + ' ' if run_id else ''}to publish in {runs} (run `superweight run` first)")
    return json.loads(paths[-1].read_text(encoding="utf-8"))


def taken_requests(root: Path, work_dir: str = ".superweight") -> set[str]:
    """Every request file any local run took: those may be deleted on GitHub."""
    runs = runs_dir(root, work_dir)
    return {p for m in runs.glob("*.json") for p in json.loads(m.read_text()).get("requests_taken", [])}


def local_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for prefix in SYNCED
        for p in sorted((root / prefix).rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def merge_remote_records(root: Path, path: str, remote_text: str) -> None:
    """Union an index file changed on GitHub too into the local one (records are append-only)."""
    from . import yamlio
    from .index import append_record
    from .index.entries import entry_from_dict

    remote = entry_from_dict(yamlio.load(remote_text, path))
    for record in remote.records:
        append_record(remote.model, record, root=root / "index")


def request_comment(file: str, update: dict, repo: str, base: str, site_url: str | None) -> str:
    model, revision = update.get("model", "?"), update.get("revision")
    at = f" at `{revision[:12]}`" if revision else ""
    state = update["state"]
    if state == "done":
        weights = (
            ", ".join(
                f"layer {w[0]} [{w[1]}, {w[2]}]" + (f" expert {w[3]}" if w[3] is not None else "")
                for w in update["super_weights"]
            )
            or "none"
        )
        original, ablated, control = update["perplexity"]
        result = f"audited: **{update['verdict']}**. Super weights: {weights}."
        if ablated is not None:
            result += f" Perplexity {original:,.2f} → {ablated:,.2f} with them zeroed (control {control:,.2f})."
        links = f"https://github.com/{repo}/blob/{base}/index/{model}.yaml"
        if site_url:
            links += f" · {site_url.rstrip('/')}/models/{model}/"
        result += f"\n\nIndex entry: {links}"
    elif state in ("pending", "running"):
        result = "queued: the scheduled auditor will take it in a coming run."
    elif state == "not_queued":
        result = f"not queued: {update['message']}"
    else:
        result = f"not audited (`{update.get('code')}`): {update.get('message')}"
    return f"{MARKER.format(file=file)}\n**Super Weight Index** · request `{file}` for `{model}`{at}: {result}\n"


def publish(
    root: Path,
    gh: GitHub,
    *,
    run_id: str | None = None,
    base: str = "main",
    site_url: str | None = None,
    work_dir: str = ".superweight",
) -> Published:
    """Publish a run (the latest by default); see the module docstring for the steps."""
    manifest = load_manifest(root, run_id, work_dir)
    run_id = manifest["run_id"]
    result = Published(run_id, BRANCH_PREFIX + run_id)
    base_sha = gh.get(f"git/ref/heads/{base}")["object"]["sha"]
    base_tree = gh.get(f"git/commits/{base_sha}")["tree"]["sha"]
    remote = {e["path"]: e["sha"] for e in gh.get(f"git/trees/{base_tree}", recursive=1)["tree"] if e["type"] == "blob"}

    local = local_files(root)
    for path, data in local.items():
        if (
            path.startswith("index/")
            and path.endswith(".yaml")
            and path in remote
            and remote[path] != git_blob_sha(data)
        ):
            remote_blob = gh.get(f"git/blobs/{remote[path]}")
            merge_remote_records(root, path, base64.b64decode(remote_blob["content"]).decode("utf-8"))
    local = local_files(root)
    changed = {p: d for p, d in local.items() if remote.get(p) != git_blob_sha(d)}
    deleted = sorted(p for p in taken_requests(root, work_dir) if p in remote)
    result.changed, result.deleted = sorted(changed), deleted

    if changed or deleted:
        tree = []
        for path, data in sorted(changed.items()):
            blob = gh.post("git/blobs", {"content": base64.b64encode(data).decode(), "encoding": "base64"})
            tree.append({"path": path, "mode": "100644", "type": "blob", "sha": blob["sha"]})
        tree += [{"path": p, "mode": "100644", "type": "blob", "sha": None} for p in deleted]
        new_tree = gh.post("git/trees", {"base_tree": base_tree, "tree": tree})["sha"]
        result.commit = branch_commit(gh, result.branch, tree=new_tree, parent=base_sha)
        if result.commit is None:  # not published yet, or the run's branch holds something else
            message = f"superweight run {run_id}: {manifest['audited']} audited, {manifest['failed']} failed"
            commit = {"message": message, "tree": new_tree, "parents": [base_sha]}
            result.commit = gh.post("git/commits", commit)["sha"]
            set_branch(gh, result.branch, result.commit)
        pull = open_or_update_pull(gh, result.branch, base, manifest)
        result.pull, result.url = pull["number"], pull["html_url"]
        gh.post(f"issues/{result.pull}/labels", {"labels": LABELS})
    result.closed = tidy(gh, keep=result.branch if result.commit else None, pull=result.pull)
    for file, update in manifest.get("request_updates", {}).items():
        number = request_pull(gh, file, base)
        if number is not None:
            comment(gh, number, file, request_comment(file, update, gh.repo, base, site_url))
            result.comments.append(f"#{number} ({file})")
    manifest["published"] = {"pull": result.pull, "url": result.url, "commit": result.commit}
    atomic_write(runs_dir(root, work_dir) / f"{run_id}.json", json.dumps(manifest))
    return result


def branch_commit(gh: GitHub, branch: str, *, tree: str, parent: str) -> str | None:
    """The branch's commit if it already holds exactly this tree on this parent (a repeated publish)."""
    try:
        head = gh.get(f"git/ref/heads/{branch}")["object"]["sha"]
    except GitHubError as e:
        if e.status == 404:
            return None
        raise
    commit = gh.get(f"git/commits/{head}")
    same = commit["tree"]["sha"] == tree and [p["sha"] for p in commit["parents"]] == [parent]
    return head if same else None


def set_branch(gh: GitHub, branch: str, sha: str) -> None:
    try:
        gh.get(f"git/ref/heads/{branch}")
    except GitHubError as e:
        if e.status != 404:
            raise
        gh.post("git/refs", {"ref": f"refs/heads/{branch}", "sha": sha})
        return
    gh.patch(f"git/refs/heads/{branch}", {"sha": sha, "force": True})


def open_or_update_pull(gh: GitHub, branch: str, base: str, manifest: dict) -> dict:
    owner = gh.repo.split("/")[0]
    title = f"Super Weight Index: run {manifest['run_id']} ({manifest['audited']} audited)"
    body = manifest["summary"] + "\n---\nOpened by superweight's publisher; merging it updates the index.\n"
    existing = gh.paginate("pulls", state="open", head=f"{owner}:{branch}")
    if existing:
        return gh.patch(f"pulls/{existing[0]['number']}", {"title": title, "body": body})
    return gh.post("pulls", {"title": title, "head": branch, "base": base, "body": body})


def tidy(gh: GitHub, *, keep: str | None, pull: int | None) -> list[int]:
    """Close older bot pull requests (the newest contains their changes); delete bot branches without one."""
    closed = []
    open_pulls = [p for p in gh.paginate("pulls", state="open") if p["head"]["ref"].startswith(BRANCH_PREFIX)]
    for p in open_pulls:
        if p["head"]["ref"] == keep or pull is None:
            continue
        gh.post(f"issues/{p['number']}/comments", {"body": f"Superseded by #{pull}, which contains these changes."})
        gh.patch(f"pulls/{p['number']}", {"state": "closed"})
        closed.append(p["number"])
    still_open = {p["head"]["ref"] for p in open_pulls if p["number"] not in closed}
    for ref in gh.get(f"git/matching-refs/heads/{BRANCH_PREFIX}"):
        branch = ref["ref"].removeprefix("refs/heads/")
        if branch != keep and branch not in still_open:
            gh.delete(f"git/refs/heads/{branch}")
    return closed


def request_pull(gh: GitHub, file: str, base: str) -> int | None:
    """The pull request that added a request file: the oldest commit touching it, and its pull request."""
    commits = gh.paginate("commits", path=file, sha=base)
    for commit in reversed(commits):
        pulls = gh.get(f"commits/{commit['sha']}/pulls")
        if pulls:
            return pulls[0]["number"]
    return None


def comment(gh: GitHub, number: int, file: str, body: str) -> None:
    marker = MARKER.format(file=file)
    mine = [c for c in gh.paginate(f"issues/{number}/comments") if marker in (c.get("body") or "")]
    if mine:
        if mine[0]["body"] != body:
            gh.patch(f"issues/comments/{mine[0]['id']}", {"body": body})
    else:
        gh.post(f"issues/{number}/comments", {"body": body})


def plan_offline(root: Path, *, run_id: str | None = None, work_dir: str = ".superweight") -> str:
    """What `publish` would do, from local files alone (no token, nothing remote touched)."""
    manifest = load_manifest(root, run_id, work_dir)
    try:
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", *SYNCED, "requests/"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = [line[3:] for line in status.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        files = sorted(local_files(root))
    lines = [
        "No GitHub token (set SUPERWEIGHT_GITHUB_TOKEN or GITHUB_TOKEN): nothing was changed on GitHub.",
        f"Would commit {len(files)} file(s) to branch {BRANCH_PREFIX}{manifest['run_id']} in one commit:",
        *[f"  {f}" for f in files],
        f"Would open or update the run's pull request, labelled {', '.join(LABELS)}, with this body:",
        "",
        manifest["summary"],
    ]
    lines += [
        f"Would comment on the pull request of {f}: {u['state']}"
        for f, u in manifest.get("request_updates", {}).items()
    ]
    return "\n".join(lines) + "\n"
