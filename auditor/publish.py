"""Publishing runs to GitHub through the REST API: one open pull request, status comments.

`publish(root, gh)` makes the repository on GitHub catch up with what the runner holds locally:

1. It reads main's tree and merges in the index records added there (records are append-only, so the
   union is kept), and those of the bot's open pull requests. It then compares the bot's files with main:
   `index/` and `queue/` are added or updated (never deleted), and request files are deleted when their
   content is exactly what a run took.
2. The bot keeps one pull request open. If it already holds every change, nothing is written: no commit,
   no edit, no comment. Otherwise one commit holds them all (blobs, tree, commit through the Git Data API):
   a new commit on the open pull request's branch (a fast-forward; a merge of main too when main moved),
   or, with none open, on a new branch named after the run, `superweight/run-<id>`, with its pull request.
3. The pull request's body lists every record it adds to the index, read from the diff with main (so it
   stays true whichever runs, dead or alive, made them), then the summaries of the runs it carries.
4. It closes any other open bot pull request (this one holds their changes) and deletes bot branches that
   have no open pull request: the leftovers of a publish that failed halfway. A pull request is the bot's
   only if the token's own account opened it from this repository (not a fork) on the bot's branch prefix,
   so nobody else's pull request is trusted, merged in or closed.
5. It posts, or updates in place (a hidden marker finds the bot's own comment), one status comment on
   each request's pull request: queued, audited (with the result and a link to the index entry), or not
   audited and why. A comment that cannot be posted (a locked pull request) is reported, not fatal.

Every run not yet published is published with the latest: a run killed before its publish (or during it)
has its requests answered by the next. Every step can be repeated, and a failure at any step is repaired by
the next publish. Text from users or the Hub goes into Markdown as code spans (`markdown.code`). Without a
token, nothing remote is touched: `plan_offline` says what would be done. `sync` is the other direction:
the runner's clone catches up with GitHub through the API, never through `git pull`.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .errors import AuditorError
from .fileio import atomic_write, git_blob_sha
from .github import GitHub, GitHubError
from .index import IndexValidationError, MeasuredRecord, append_record
from .index.checks import check_text, identity
from .index.entries import SameWeightsRecord, ScreenedRecord
from .markdown import code, comment_safe
from .scheduler.lock import repo_lock
from .scheduler.report import PublishedRef, RequestUpdate, RunManifest, read_manifest, write_manifest
from .scheduler.summary import audit_table

log = logging.getLogger(__name__)

BRANCH_PREFIX = "superweight/run-"
LABELS = ["superweight-bot", "audit-results"]
SYNCED = ("index/", "queue/")
MARKER = "<!-- superweight:request-status {file} -->"  # the file name percent-encoded: `-->` cannot end it
SUPERSEDED = "<!-- superweight:superseded -->"
MAX_BODY = 65_536  # GitHub's limit on a pull request's body


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
    failed: list[str] = field(default_factory=list)
    """Status comments that could not be posted, with why."""
    committed: bool = False
    """Whether this publish made a commit (False: the open pull request already held every change)."""


def runs_dir(root: Path, work_dir: str = ".superweight") -> Path:
    return root / work_dir / "runs"


def manifests(root: Path, work_dir: str = ".superweight") -> list[tuple[Path, RunManifest]]:
    """Every run's manifest, oldest first (run ids sort by time)."""
    runs = runs_dir(root, work_dir)
    return [(path, read_manifest(path)) for path in sorted(runs.glob("*.json"), key=run_order)] if runs.is_dir() else []


def run_order(path: Path) -> tuple[str, int]:
    """Run ids are start times, with `-2`, `-3`... for runs in the same second (which sort before the
    first by name: `-` comes before `.`)."""
    start, _, n = path.stem.partition("-")
    return start, int(n) if n.isdigit() else 1


def to_publish(runs: list[tuple[Path, RunManifest]], run_id: str | None, where: Path) -> list[tuple[Path, RunManifest]]:
    """Of every run (`manifests`), the run to publish (the latest by default), after every earlier run not
    published yet: one killed before its publish, or whose publish failed."""
    if run_id is not None:
        runs = runs[: next((n + 1 for n, (path, _) in enumerate(runs) if path.stem == run_id), 0)]
    if not runs:
        raise GitHubError(f"no run {run_id + ' ' if run_id else ''}to publish in {where} (run `superweight run` first)")
    return [(path, m) for path, m in runs[:-1] if m.published is None] + runs[-1:]


def taken_requests(runs: list[tuple[Path, RunManifest]]) -> dict[str, set[str]]:
    """Request file -> the git blob shas local runs (`manifests`) took from it. A file on GitHub is deleted
    only if its content is one of these: a new request that reuses the name of an old one is not touched."""
    taken: dict[str, set[str]] = {}
    for _, manifest in runs:
        for path, sha in manifest.requests_taken.items():
            taken.setdefault(path, set()).add(sha)
    return taken


def local_files(root: Path) -> dict[str, bytes]:
    """The files publish keeps in step: plain files under index/ and queue/, no dotfiles, no links (a link
    could point anywhere on the runner)."""
    files = {}
    for prefix in SYNCED:
        for folder, dirs, names in os.walk(root / prefix):  # does not follow linked folders
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(folder) / name
                if not name.startswith(".") and not path.is_symlink() and path.is_file():
                    files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def merge_remote_records(root: Path, path: str, remote_text: str) -> None:
    """Union an index file changed on GitHub too into the local one (records are append-only).

    Raises:
        IndexValidationError: the file on GitHub breaks the index's rules (nothing is merged).
    """
    remote, problems = check_text(remote_text, path.removeprefix("index/"), canonical=False)
    if problems:
        raise IndexValidationError(problems)
    for record in remote.records:
        append_record(remote.model, record, root=root / "index")


def request_comment(file: str, update: RequestUpdate, repo: str, base: str, site_url: str | None) -> str:
    """The status comment on a request's pull request. Everything that came from the requester or the Hub
    (the file name, the model id, messages) is a code span: no mention, link or markup of theirs goes live."""
    model, revision = update.model or "?", update.revision
    at = f" at {code(revision[:12])}" if revision else ""
    entry = quote(model, safe="/")
    links = f"https://github.com/{repo}/blob/{quote(base, safe='/')}/index/{entry}.yaml"
    if site_url:
        links += f" · {site_url.rstrip('/')}/models/{entry}/"
    state = update.state
    if state == "done":
        weights = (
            ", ".join(
                f"layer {w[0]} [{w[1]}, {w[2]}]" + (f" expert {w[3]}" if w[3] is not None else "")
                for w in update.super_weights or []
            )
            or "none"
        )
        original, ablated, control = update.perplexity
        result = f"audited: **{update.verdict}**. Super weights: {weights}."
        if ablated is not None:
            result += f" Perplexity {original:,.2f} → {ablated:,.2f} with them zeroed (control {control:,.2f})."
        result += f"\n\nIndex entry: {links}"
    elif state == "same_weights":
        same = code(update.message or "?")
        result = f"recorded without an audit: its weight files are byte-identical to {same}'s.\n\nIndex entry: {links}"
    elif state in ("pending", "running"):
        result = "queued: the scheduled auditor will take it in a coming run."
    elif state == "not_queued":
        result = f"not queued: {code(update.message or '')}"
    else:
        result = f"not audited ({code(update.code)}): {code(update.message or '')}"
    return f"{marker(file)}\n**Super Weight Index** · request {code(file)} for {code(model)}{at}: {result}\n"


def marker(file: str) -> str:
    return MARKER.format(file=comment_safe(file))


def remote_tree(gh: GitHub, ref: str) -> tuple[str, str, dict[str, str]]:
    """(commit sha, tree sha, {path: blob sha}) of a branch name or a commit sha on GitHub."""
    sha = (
        ref
        if len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)
        else gh.get(f"git/ref/heads/{ref}")["object"]["sha"]
    )
    tree = gh.get(f"git/commits/{sha}")["tree"]["sha"]
    listing = gh.get(f"git/trees/{tree}", recursive=1)
    if listing.get("truncated"):  # past 100,000 entries: what is missing here would be overwritten
        raise GitHubError(f"the tree of {ref} is too large for GitHub to list whole; publishing would lose files")
    return sha, tree, {e["path"]: e["sha"] for e in listing["tree"] if e["type"] == "blob"}


def blob_text(gh: GitHub, sha: str) -> str:
    return gh.redact(base64.b64decode(gh.get(f"git/blobs/{sha}")["content"]).decode("utf-8"))


def absorb_index(root: Path, gh: GitHub, remote: dict[str, str]) -> list[str]:
    """Union every index file of a GitHub tree that differs from the local one into the local index."""
    local = local_files(root)
    merged = []
    for path, sha in sorted(remote.items()):
        if path.startswith("index/") and path.endswith(".yaml") and git_blob_sha(local.get(path, b"")) != sha:
            try:
                merge_remote_records(root, path, blob_text(gh, sha))
                merged.append(path)
            except (AuditorError, ValueError) as e:  # an invalid file on GitHub: the CI there reports it
                log.warning("%s on GitHub was not merged: %s", path, e)
    return merged


@dataclass
class Synced:
    merged: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    config: bool = False
    """Whether auditor.yaml changed (maintainers edit it on GitHub; the runner takes theirs)."""


def sync(root: Path, gh: GitHub, *, base: str = "main", work_dir: str = ".superweight") -> Synced:
    """Catch the runner's repository up with GitHub without git: index records added on `base` are merged
    in (the runner's own state stays), request files merged there since are fetched (except those a run
    already took), and the maintainers' auditor.yaml replaces the local one. The runner's clone is never
    `git pull`ed, so its state cannot be overwritten."""
    with repo_lock(root):
        return sync_locked(root, gh, base=base, work_dir=work_dir)


def sync_locked(root: Path, gh: GitHub, *, base: str, work_dir: str) -> Synced:
    _, _, remote = remote_tree(gh, base)
    done = Synced(merged=absorb_index(root, gh, remote))
    config = root / "auditor.yaml"
    if "auditor.yaml" in remote and (
        not config.exists() or git_blob_sha(config.read_bytes()) != remote["auditor.yaml"]
    ):
        atomic_write(config, blob_text(gh, remote["auditor.yaml"]))
        done.config = True
    taken = taken_requests(manifests(root, work_dir))
    for path, sha in sorted(remote.items()):
        name = path.removeprefix("requests/")
        is_request = name != path and "/" not in name and name.endswith(".yaml")
        if is_request and sha not in taken.get(path, set()) and not (root / path).exists():
            atomic_write(root / path, blob_text(gh, sha))
            done.requests.append(path)
    return done


def publish(
    root: Path,
    gh: GitHub,
    *,
    run_id: str | None = None,
    base: str = "main",
    site_url: str | None = None,
    work_dir: str = ".superweight",
) -> Published:
    """Publish a run (the latest by default) and any earlier one not published yet; see the module docstring."""
    with repo_lock(root):
        return publish_locked(root, gh, run_id=run_id, base=base, site_url=site_url, work_dir=work_dir)


def publish_locked(root: Path, gh: GitHub, *, run_id, base, site_url, work_dir) -> Published:
    every = manifests(root, work_dir)  # read once: what to publish, what was taken, what the pull request carries
    runs = to_publish(every, run_id, runs_dir(root, work_dir))
    latest = runs[-1][1]
    result = Published(latest.run_id, BRANCH_PREFIX + latest.run_id)
    base_sha, base_tree, remote = remote_tree(gh, base)
    absorb_index(root, gh, remote)
    bot_pulls = sorted((p for p in gh.paginate("pulls", state="open") if is_bots(gh, p)), key=lambda p: p["number"])
    heads = {}
    for p in bot_pulls:  # their records go into the commit too: closing one, or adding to it, loses none
        heads[p["number"]] = remote_tree(gh, p["head"]["sha"])[2]
        absorb_index(root, gh, heads[p["number"]])
    mine, older = (bot_pulls[-1], bot_pulls[:-1]) if bot_pulls else (None, [])

    local = local_files(root)
    changed = {p: d for p, d in local.items() if remote.get(p) != git_blob_sha(d)}
    deleted = {p for p, shas in taken_requests(every).items() if remote.get(p) in shas}
    result.changed, result.deleted = sorted(changed), sorted(deleted)

    carried = False
    if changed or deleted:
        if mine is not None:
            result.branch = mine["head"]["ref"]
            result.commit, carried = add_to_pull(
                gh, mine, heads[mine["number"]], remote, local, changed, deleted, base_sha, base_tree, latest
            )
        else:
            tree = new_tree(gh, base_tree, changed, deleted)
            result.commit = branch_commit(gh, result.branch, tree=tree, parent=base_sha)
            if result.commit is None:  # not published yet, or the run's branch holds something else
                result.commit = new_commit(gh, latest, tree, [base_sha])
                set_branch(gh, result.branch, result.commit)
            carried = True
        number = mine["number"] if mine is not None else None
        carrying = [
            m
            for _, m in every
            if m.published and m.published.commit and m.published.pull == number and number is not None
        ]
        carrying += [m for _, m in runs if carried and m.run_id not in {c.run_id for c in carrying}]
        title, body = pull_text(gh, remote, changed, result.deleted, carrying)
        pull = open_or_update_pull(gh, mine, result.branch, base, title, body)
        result.pull, result.url = pull["number"], pull["html_url"]
        if not set(LABELS) <= {label["name"] for label in (mine or {}).get("labels", [])}:
            gh.post(f"issues/{result.pull}/labels", {"labels": LABELS}, idempotent=True)
        result.closed = close_superseded(gh, older, result.pull)
    delete_orphan_branches(
        gh, keep=result.branch if result.commit else None, open_pulls=bot_pulls, closed=result.closed
    )
    updates: dict[str, RequestUpdate] = {}
    for _, m in runs:  # oldest first: what the latest run says of a request is its news
        updates.update(m.request_updates)
    for file, update in updates.items():
        try:  # one locked or deleted pull request must not keep the others from their news
            number = request_pull(gh, file, base)
            if number is not None:
                comment(gh, number, marker(file), request_comment(file, update, gh.repo, base, site_url))
                result.comments.append(f"#{number} ({file})")
        except GitHubError as e:
            log.warning("no status comment for %s: %s", file, e)
            result.failed.append(f"{file}: {e}")
    result.committed = carried
    for path, m in runs:
        m.published = PublishedRef(result.pull, result.url, result.commit if carried else None)
        write_manifest(path, m)
    return result


def add_to_pull(
    gh, pull, head_files, main_files, local, changed, deleted, base_sha, base_tree, latest
) -> tuple[str, bool]:
    """The open pull request's new head: none when it already holds every change (a run with nothing new
    writes nothing), else a commit on top of it that holds them all, merging main in when main moved.
    Returns the head commit and whether this publish made it."""
    head = pull["head"]["sha"]
    kept = {p: sha for p, sha in main_files.items() if p.startswith("requests/") and p not in deleted}
    if (
        all(head_files.get(p) == git_blob_sha(d) for p, d in local.items())
        and deleted.isdisjoint(head_files)
        and all(head_files.get(p) == sha for p, sha in kept.items())  # a request merged since is not deleted
    ):
        return head, False
    tree = new_tree(gh, base_tree, changed, deleted)
    parents = [head]
    if base_sha != head and base_sha not in [p["sha"] for p in gh.get(f"git/commits/{head}")["parents"]]:
        parents.append(base_sha)  # main moved on since: this commit merges it, so the pull request stays mergeable
    commit = new_commit(gh, latest, tree, parents)
    gh.patch(f"git/refs/heads/{pull['head']['ref']}", {"sha": commit, "force": False})  # a fast-forward only
    return commit, True


def new_tree(gh: GitHub, base_tree: str, changed: dict[str, bytes], deleted: set[str] | list[str]) -> str:
    tree = [tree_entry(gh, path, data) for path, data in sorted(changed.items())]
    tree += [{"path": p, "mode": "100644", "type": "blob", "sha": None} for p in sorted(deleted)]
    return gh.post("git/trees", {"base_tree": base_tree, "tree": tree}, idempotent=True)["sha"]


def new_commit(gh: GitHub, manifest: RunManifest, tree: str, parents: list[str]) -> str:
    message = f"superweight run {manifest.run_id}: {manifest.audited} audited, {manifest.failed} failed"
    return gh.post("git/commits", {"message": message, "tree": tree, "parents": parents}, idempotent=True)["sha"]


def added_records(gh: GitHub, remote: dict[str, str], changed: dict[str, bytes]) -> list[tuple[str, object]]:
    """(model, record) for every record the changed index files add to main's: what the pull request holds."""
    added = []
    for path, data in sorted(changed.items()):
        if not (path.startswith("index/") and path.endswith(".yaml")):
            continue
        entry, _ = check_text(data.decode("utf-8"), path.removeprefix("index/"), canonical=False)
        if entry is None:
            continue
        before = set()
        if path in remote:
            main, _ = check_text(blob_text(gh, remote[path]), path.removeprefix("index/"), canonical=False)
            before = {identity(r) for r in main.records} if main is not None else set()
        added += [(entry.model, r) for r in entry.records if identity(r) not in before]
    return added


def pull_text(gh, remote, changed, deleted, carrying: list[RunManifest]) -> tuple[str, str]:
    """The pull request's title and body: every record it adds, the request files it answers, then the
    summaries of the runs it carries (cut to fit GitHub's limit)."""
    added = added_records(gh, remote, changed)
    audits = [(m, r) for m, r in added if isinstance(r, MeasuredRecord)]
    same = [(m, r) for m, r in added if isinstance(r, SameWeightsRecord)]
    screened = [(m, r) for m, r in added if isinstance(r, ScreenedRecord)]
    runs = sorted({m.run_id for m in carrying})
    span = "" if not runs else f" (run {runs[0]})" if len(runs) == 1 else f" (runs {runs[0]} to {runs[-1]})"
    title = f"Super Weight Index: {len(audits)} audited, {len(same)} identical weights{span}"
    lines = [f"## {title}", "", "This pull request adds to the index:"]
    if audits:
        lines += ["", *audit_table(audits)]
    if same:
        lines += ["", "Identical weights (no download):", ""]
        lines += [
            f"- {code(m)} {code(r.revision[:12])}: same files as {code(r.same_weights_as.model)} "
            f"{code(r.same_weights_as.revision[:12])}"
            for m, r in same
        ]
    if screened:
        lines += ["", "Screened derivatives (range reads at the base model's super weights, not audits):", ""]
        for m, r in screened:
            lines.append(f"- {code(m)} {code(r.revision[:12])}: {r.outcome}, against {code(r.base.model)}")
    if not added:
        lines += ["", "no new record (queue changes only)."]
    if deleted:
        lines += ["", "Request files answered (deleted):", "", *[f"- {code(p)}" for p in deleted]]
    footer = "\n---\nOpened by superweight's publisher; merging it updates the index.\n"
    body = "\n".join(lines) + "\n"
    for m in sorted(carrying, key=lambda m: m.run_id, reverse=True):  # newest first: the oldest is cut first
        body += "\n" + m.summary
    if len(body) + len(footer) > MAX_BODY:
        cut = "\n\n… (the rest is cut to fit GitHub's limit; the runner keeps every run's summary whole)\n"
        body = body[: MAX_BODY - len(footer) - len(cut)].rsplit("\n", 1)[0] + cut
    return title, body + footer


def is_bots(gh: GitHub, pull: dict) -> bool:
    """A run pull request of this bot: its branch prefix, opened by the token's account, from this repository."""
    head_repo = (pull["head"].get("repo") or {}).get("full_name", "")
    return (
        pull["head"]["ref"].startswith(BRANCH_PREFIX)
        and head_repo.lower() == gh.repo.lower()
        and login_of(pull) == gh.login
    )


def login_of(thing: dict) -> str | None:
    """Who made a pull request or comment: None for a deleted account (GitHub sends `"user": null`)."""
    return (thing.get("user") or {}).get("login")


def tree_entry(gh: GitHub, path: str, data: bytes) -> dict:
    """A tree entry for a changed file: text goes inline (one request for the whole tree, not one per
    file, which matters under GitHub's limits on content-creating requests); anything else as a blob."""
    entry = {"path": path, "mode": "100644", "type": "blob"}
    try:
        return entry | {"content": data.decode("utf-8")}
    except UnicodeDecodeError:
        blob = gh.post("git/blobs", {"content": base64.b64encode(data).decode(), "encoding": "base64"}, idempotent=True)
        return entry | {"sha": blob["sha"]}


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


def open_or_update_pull(gh: GitHub, mine: dict | None, branch: str, base: str, title: str, body: str) -> dict:
    """Open the pull request, or edit the open one when its text is not already this."""
    if mine is None:
        return gh.post("pulls", {"title": title, "head": branch, "base": base, "body": body})
    if (mine.get("title"), mine.get("body")) == (title, body):
        return mine
    return gh.patch(f"pulls/{mine['number']}", {"title": title, "body": body})


def close_superseded(gh: GitHub, older: list[dict], pull: int) -> list[int]:
    """Close older bot pull requests (this one now holds their changes), saying so once."""
    for p in older:
        comment(gh, p["number"], SUPERSEDED, f"{SUPERSEDED}\nSuperseded by #{pull}, which contains these changes.\n")
        gh.patch(f"pulls/{p['number']}", {"state": "closed"})
    return [p["number"] for p in older]


def delete_orphan_branches(gh: GitHub, *, keep: str | None, open_pulls: list[dict], closed: list[int]) -> None:
    """Delete bot branches with no open pull request: superseded ones, and leftovers of a failed publish."""
    still_open = {p["head"]["ref"] for p in open_pulls if p["number"] not in closed}
    for ref in gh.get(f"git/matching-refs/heads/{BRANCH_PREFIX}"):
        branch = ref["ref"].removeprefix("refs/heads/")
        if branch != keep and branch not in still_open:
            try:
                gh.delete(f"git/refs/heads/{branch}")
            except GitHubError as e:  # already gone (a retried delete that had gone through): fine
                if e.status not in (404, 422):
                    raise


def request_pull(gh: GitHub, file: str, base: str) -> int | None:
    """The pull request that added a request file: the newest commit on `base` touching the path that came
    from a pull request someone other than the bot opened."""
    for commit in gh.paginate("commits", path=file, sha=base):
        for pull in gh.get(f"commits/{commit['sha']}/pulls"):
            if login_of(pull) != gh.login:
                return pull["number"]
    return None


def comment(gh: GitHub, number: int, marker: str, body: str) -> None:
    """Post `body` on a pull request, or update the bot's own comment that starts with `marker`: anyone can
    write a marker, so only the bot's comments count."""
    mine = [
        c
        for c in gh.paginate(f"issues/{number}/comments")
        if login_of(c) == gh.login and (c.get("body") or "").startswith(marker)
    ]
    if mine:
        if mine[0]["body"] != body:
            gh.patch(f"issues/comments/{mine[0]['id']}", {"body": body})
    else:
        gh.post(f"issues/{number}/comments", {"body": body})


def plan_offline(root: Path, *, run_id: str | None = None, work_dir: str = ".superweight") -> str:
    """What `publish` would do, from local files alone (no token, nothing remote touched)."""
    every = manifests(root, work_dir)
    manifest = to_publish(every, run_id, runs_dir(root, work_dir))[-1][1]
    local = local_files(root)
    try:  # changed since this clone's last commit: GitHub's main may be newer, which publish would merge
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all", "--", *SYNCED],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = sorted({line[3:] for line in status.splitlines()} & set(local))
    except (OSError, subprocess.CalledProcessError):
        files = sorted(local)
    deleted = sorted(taken_requests(every))
    lines = [
        "No GitHub token (set SUPERWEIGHT_GITHUB_TOKEN or GITHUB_TOKEN): nothing was changed on GitHub.",
        f"Would commit, in one commit on the open bot pull request's branch (else a new branch "
        f"{BRANCH_PREFIX}{manifest.run_id}), unless it already holds them (changes since this clone's "
        f"last commit, {len(files)} file(s), and the request files the runs took, if still on GitHub):",
        *[f"  {f}" for f in files],
        *[f"  delete {f}" for f in deleted],
        f"Would open or update the run's pull request, labelled {', '.join(LABELS)}, with this body:",
        "",
        manifest.summary,
    ]
    lines += [f"Would comment on the pull request of {f}: {u.state}" for f, u in manifest.request_updates.items()]
    return "\n".join(lines) + "\n"
