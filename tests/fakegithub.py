"""A local stand-in for the part of GitHub's REST API the publishing bot uses, for tests.

`FakeGitHub` is a real HTTP/1.1 server on 127.0.0.1 (stdlib `ThreadingHTTPServer`, one daemon thread per
connection, keep-alive) that answers like api.github.com, from repositories held in memory. It never opens
a connection to anything.

    with FakeGitHub() as gh:
        base = gh.add_repo("org/index", files={"README.md": b"# Index\\n"})
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {gh.token}"
        session.get(f"{gh.url}/repos/org/index/git/ref/heads/main").json()["object"]["sha"] == base

Repositories hold a real git object model: blobs, trees (nested, modes 100644 / 100755 / 040000 / 120000 /
160000) and commits, addressed by their git SHA-1 (`sha1(b"blob <len>\\0<data>")`, ...), so SHAs are
exactly what git (and GitHub) would compute, and deterministic: the dates of commits created without an
explicit date, and of every `created_at` / `updated_at`, come from a clock that starts at 2024-01-01T00:00:00Z
and advances one second per use.

Every request must carry `Authorization: Bearer <token>` or `Authorization: token <token>` with
`gh.token` (the bot, `gh.user`) or a token `gh.add_user(login)` gave (another person: pull requests,
comments and commits made with it are theirs): no header answers 401 "Requires authentication", another
token 401 "Bad credentials". The rate limits are shared by all tokens.
`X-GitHub-Api-Version`, when sent, must be one of `gh.api_versions` (400 otherwise, like GitHub). Any
`Accept` is answered with JSON, except `application/vnd.github.raw` (and `...raw+json`) on contents.

Routes (paths as on api.github.com; `{o}/{r}` is matched case-insensitively, like GitHub):

- `GET /repos/{o}/{r}`: the repository (full_name, default_branch, private, permissions, ...).
- `GET /repos/{o}/{r}/git/ref/{ref}` (e.g. `heads/main`): one ref, 404 if missing.
- `GET /repos/{o}/{r}/git/matching-refs/{prefix}`: refs whose name starts with `refs/{prefix}` (list,
  possibly empty). `GET /repos/{o}/{r}/git/refs[/{ref}]`: the legacy form (all refs; the exact ref as an
  object, or else the refs it is a prefix of, as a list; 404 when none).
- `POST /repos/{o}/{r}/git/refs {ref, sha}`: 201; 422 "Reference already exists", "Reference name is
  invalid" (must start with `refs/` and have two slashes), "Object does not exist", "Reference update
  failed" (a folder/file clash such as `heads/a` and `heads/a/b`, which git cannot store).
- `PATCH /repos/{o}/{r}/git/refs/{ref} {sha, force}`: 200; 422 "Update is not a fast forward" unless
  `force`, "Reference does not exist", "Object does not exist".
- `DELETE /repos/{o}/{r}/git/refs/{ref}`: 204; 422 "Reference does not exist"; the default branch cannot
  be deleted (422). Deleting the head (or base) branch of an open pull request closes it, like GitHub.
- `POST /repos/{o}/{r}/git/blobs {content, encoding}` (`utf-8` or `base64`): 201 {sha, url};
  `GET /repos/{o}/{r}/git/blobs/{sha}`: base64 content, wrapped at 60 columns like GitHub's.
- `POST /repos/{o}/{r}/git/trees {base_tree?, tree: [{path, mode, type, sha | content}]}`: 201 with the
  new top-level tree. Paths with slashes edit nested trees; `sha: null` deletes a file (or a folder), and
  folders left empty disappear; deleting a path that does not exist is refused (422), as is an entry with
  both or neither of `sha` and `content`, a mode/type mismatch, a malformed path or an unknown object.
  Entries that replace a whole folder (`type: tree`) are applied before the nested paths that edit it.
- `GET /repos/{o}/{r}/git/trees/{tree-ish}[?recursive=...]`: a tree by sha, or the tree of a commit, a
  branch or a tag. As on GitHub, *any* value of `recursive` (even `0` or `false`) lists recursively.
- `POST /repos/{o}/{r}/git/commits {message, tree, parents, author?, committer?}`: 201;
  `GET /repos/{o}/{r}/git/commits/{sha}`. Author defaults to the token's user, committer to the author.
- `GET /repos/{o}/{r}/contents/{path}?ref=`: a file (base64 content, wrapped; over 1 MiB: `content` ""
  and `encoding` "none", like GitHub) or a folder listing; 404 "Not Found", or "No commit found for the
  ref ..." for an unknown ref.
- `GET|POST /repos/{o}/{r}/pulls`: list (`state` open|closed|all, `head` as `owner:branch` -- a head
  without the `owner:` prefix is ignored, as on GitHub -- `base`, `sort`, `direction`, paginated) and create
  (201; 422 "Validation Failed" with errors[0].message "A pull request already exists for owner:branch."
  for an open pull request with the same head and base, "No commits between base and head" when the head
  is not ahead, field errors for an unknown head or base branch, title over 256 or body over 65536
  characters).
- `GET|PATCH /repos/{o}/{r}/pulls/{n}` (title, body, state, base); `GET /repos/{o}/{r}/pulls/{n}/files`
  (filename, status added|modified|removed, additions, deletions, changes, patch; against the merge base,
  paginated); `PUT /repos/{o}/{r}/pulls/{n}/merge` (merge or squash; 405 not mergeable, 409 head moved).
- `GET|PATCH /repos/{o}/{r}/issues/{n}` (pull requests are issues; no plain issues are modelled).
- `GET|POST|PUT|DELETE /repos/{o}/{r}/issues/{n}/labels`, `DELETE .../labels/{name}`: labels as GitHub's
  label objects, the whole list answered (200); unknown labels are created in the repo (color ededed).
  `GET|POST /repos/{o}/{r}/labels`, `GET /repos/{o}/{r}/labels/{name}`.
- `GET|POST /repos/{o}/{r}/issues/{n}/comments` (paginated, oldest first; body required, at most 65536
  characters), `GET|PATCH|DELETE /repos/{o}/{r}/issues/comments/{id}`.
- `POST /repos/{o}/{r}/statuses/{sha} {state, target_url, description, context}`: 201 (state one of
  error|failure|pending|success, description at most 140 characters, sha a commit of the repo, at most
  1000 statuses per sha and context); `GET /repos/{o}/{r}/commits/{ref}/statuses` (newest first,
  paginated) and `GET /repos/{o}/{r}/commits/{ref}/status` (combined state, latest per context).
- `GET /rate_limit` (does not count against the limit), `GET /user`.
- Anything else: 404 {"message": "Not Found"}. An empty repository (`add_repo(..., files=None)`) answers
  409 "Git Repository is empty." to the Git Data API, like GitHub.

Pagination is GitHub's: `per_page` (default 30, at most 100) and `page`, with a `Link` header carrying
rel="prev", "next", "last" and "first" as applicable (`requests` exposes it as `response.links`).

Errors are shaped like GitHub's: {"message", "documentation_url", "status": "<code>"} and, for 422
"Validation Failed", an `errors` list of {resource, code, field?, message?}.

Every answer carries the primary rate-limit headers (`x-ratelimit-limit`, `-remaining`, `-used`, `-reset`
in epoch seconds, `-resource: core`). Each authenticated request counts, except `GET /rate_limit` and
conditional requests answered 304. When `gh.rate_limit` requests have been made in the current window
(`gh.rate_limit_window` seconds, an hour by default, in real time), requests are answered
`gh.rate_limit_status` (403, or 429) "API rate limit exceeded for user ID ...", remaining 0, until the
window resets. GET answers carry a strong `ETag` of the body; a matching `If-None-Match` gets 304 with no
body. `gh.write_limit_per_minute` (off by default) models the secondary limit on content-creating
requests (POST/PATCH/PUT/DELETE): beyond it within 60 s, 403 "You have exceeded a secondary rate
limit..." with `retry-after`.

Faults: `fail_next` answers a status (default 502) to matching requests instead of GitHub (or, with
`applied=True`, after GitHub carried the request out: the answer is lost, not the effect);
`secondary_rate_limit` is `fail_next` with GitHub's secondary-limit answer; `drop_next` closes the
connection without answering; `fail_after` and `fail_from` make everything fail from some point on.
Injected 4xx answers carry the (uncounted) primary rate-limit headers, injected 5xx do not.

Left out on purpose: forks, permissions per token, plain issues, reviews, checks API, the contents write
API (`PUT /contents`), GraphQL, `Last-Modified` / `If-Modified-Since`, rename detection in pull request
files, webhooks and Actions.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import fnmatch
import hashlib
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import quote, urlencode

from loopback import LoopbackHandler, LoopbackServer, Request, Response, Served, json_response

__all__ = [
    "API_VERSION",
    "DEFAULT_TOKEN",
    "SECONDARY_RATE_LIMIT_MESSAGE",
    "Blob",
    "Comment",
    "Commit",
    "FakeGitHub",
    "Label",
    "PullRequest",
    "RecordedRequest",
    "Signature",
    "Status",
    "Tree",
    "TreeEntry",
    "git_sha",
]

API_VERSION = "2022-11-28"
"""The REST API version GitHub documents (and selects when no `X-GitHub-Api-Version` is sent)."""
DEFAULT_TOKEN = "ghp_FakeGitHubTestToken0000000000000000"
DOCS_URL = "https://docs.github.com/rest"
RATE_LIMIT_DOCS_URL = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
SECONDARY_RATE_LIMIT_DOCS_URL = (
    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach "
    "out to GitHub Support for help, please include the request ID {request_id}."
)
EMPTY_TREE_SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

MAX_BODY_CHARS = 65536
MAX_TITLE_CHARS = 256
MAX_STATUS_DESCRIPTION = 140
MAX_STATUSES_PER_CONTEXT = 1000
CONTENTS_INLINE_LIMIT = 1024 * 1024
STATUS_STATES = ("error", "failure", "pending", "success")
BLOB_MODES = ("100644", "100755", "120000")
TREE_MODE, GITLINK_MODE = "040000", "160000"
_MODE_TYPES = {**dict.fromkeys(BLOB_MODES, "blob"), TREE_MODE: "tree", GITLINK_MODE: "commit"}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Git object model
# --------------------------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_date(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Signature:
    """Author or committer of a commit, with the date's own UTC offset kept, as git does."""

    name: str
    email: str
    date: datetime

    def encode(self) -> str:
        offset = int((self.date.utcoffset() or timedelta(0)).total_seconds() // 60)
        sign = "+" if offset >= 0 else "-"
        hours, minutes = divmod(abs(offset), 60)
        return f"{self.name} <{self.email}> {int(self.date.timestamp())} {sign}{hours:02d}{minutes:02d}"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "email": self.email, "date": _iso(self.date)}


@dataclass(frozen=True)
class Blob:
    data: bytes
    kind: ClassVar[str] = "blob"

    def payload(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a tree; `mode` as the API spells it ("100644", "040000", ...)."""

    name: str
    mode: str
    sha: str

    @property
    def type(self) -> str:
        return _MODE_TYPES[self.mode]


@dataclass(frozen=True)
class Tree:
    entries: tuple[TreeEntry, ...]
    """In git's order: by name, a folder's name compared as if it ended with "/"."""
    kind: ClassVar[str] = "tree"

    @staticmethod
    def of(entries: Iterable[TreeEntry]) -> Tree:
        key = lambda e: e.name.encode() + (b"/" if e.mode == TREE_MODE else b"")  # noqa: E731
        return Tree(tuple(sorted(entries, key=key)))

    def payload(self) -> bytes:
        # git writes a folder's mode as "40000", without the leading zero the API shows.
        return b"".join(f"{e.mode.lstrip('0')} {e.name}".encode() + b"\0" + bytes.fromhex(e.sha) for e in self.entries)


@dataclass(frozen=True)
class Commit:
    tree: str
    parents: tuple[str, ...]
    author: Signature
    committer: Signature
    message: str
    kind: ClassVar[str] = "commit"

    def payload(self) -> bytes:
        lines = [
            f"tree {self.tree}",
            *(f"parent {p}" for p in self.parents),
            f"author {self.author.encode()}",
            f"committer {self.committer.encode()}",
        ]
        return ("\n".join(lines) + "\n\n" + self.message).encode()


GitObject = Blob | Tree | Commit
Flat = dict[str, tuple[str, str]]
"""A flattened tree: path -> (mode, sha) for every blob and gitlink, folders implied."""


def git_sha(obj: GitObject) -> str:
    """The object's git SHA-1: sha1(b"<kind> <len>\\0" + payload), as `git hash-object` computes it."""
    payload = obj.payload()
    return hashlib.sha1(f"{obj.kind} {len(payload)}\0".encode() + payload).hexdigest()


# --------------------------------------------------------------------------------------------------
# Repository state
# --------------------------------------------------------------------------------------------------


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None
    default: bool = False


@dataclass
class PullRequest:
    """A pull request (and the issue it is). `labels` holds label names; `head_sha` follows the head
    branch while the pull request is open."""

    number: int
    id: int
    issue_id: int
    title: str
    body: str | None
    head: str
    base: str
    head_sha: str
    base_sha: str
    user: str
    draft: bool = False
    state: Literal["open", "closed"] = "open"
    labels: list[str] = field(default_factory=list)
    created_at: datetime = _EPOCH
    updated_at: datetime = _EPOCH
    closed_at: datetime | None = None
    merged_at: datetime | None = None
    merge_commit_sha: str | None = None

    @property
    def merged(self) -> bool:
        return self.merged_at is not None


@dataclass
class Comment:
    id: int
    number: int
    body: str
    user: str
    created_at: datetime
    updated_at: datetime


@dataclass
class Status:
    id: int
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    creator: str
    created_at: datetime


@dataclass
class _Repo:
    id: int
    owner: str
    name: str
    default_branch: str
    private: bool
    created_at: datetime
    objects: dict[str, GitObject] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, PullRequest] = field(default_factory=dict)
    comments: dict[int, Comment] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    statuses: dict[str, list[Status]] = field(default_factory=dict)
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def store(self, obj: GitObject) -> str:
        sha = git_sha(obj)
        self.objects.setdefault(sha, obj)
        return sha

    def get(self, sha: str, kind: type[T]) -> T | None:
        obj = self.objects.get(sha)
        return obj if isinstance(obj, kind) else None

    def flatten(self, tree_sha: str, prefix: str = "") -> Flat:
        flat: Flat = {}
        tree = self.get(tree_sha, Tree)
        assert tree is not None, tree_sha
        for entry in tree.entries:
            path = f"{prefix}{entry.name}"
            if entry.mode == TREE_MODE:
                flat.update(self.flatten(entry.sha, f"{path}/"))
            else:
                flat[path] = (entry.mode, entry.sha)
        return flat

    def store_flat(self, flat: Flat) -> str:
        """Store the trees that hold `flat` (folders left empty disappear); returns the root tree sha."""
        files: list[TreeEntry] = []
        folders: dict[str, Flat] = {}
        for path, (mode, sha) in flat.items():
            head, sep, rest = path.partition("/")
            if sep:
                folders.setdefault(head, {})[rest] = (mode, sha)
            else:
                files.append(TreeEntry(head, mode, sha))
        subtrees = [TreeEntry(name, TREE_MODE, self.store_flat(sub)) for name, sub in folders.items()]
        return self.store(Tree.of([*files, *subtrees]))

    def walk(self, tree_sha: str, prefix: str = "") -> Iterator[tuple[str, TreeEntry]]:
        """(path, entry) for every entry under a tree, folders before their contents."""
        tree = self.get(tree_sha, Tree)
        assert tree is not None, tree_sha
        for entry in tree.entries:
            path = f"{prefix}{entry.name}"
            yield path, entry
            if entry.mode == TREE_MODE:
                yield from self.walk(entry.sha, f"{path}/")

    def ancestors(self, sha: str) -> list[str]:
        """`sha` and every commit reachable from it, nearest first."""
        seen, order, queue = {sha}, [], [sha]
        while queue:
            current = queue.pop(0)
            order.append(current)
            commit = self.get(current, Commit)
            for parent in commit.parents if commit else ():
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)
        return order

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return ancestor in self.ancestors(descendant)

    def merge_base(self, a: str, b: str) -> str | None:
        reachable = set(self.ancestors(a))
        return next((sha for sha in self.ancestors(b) if sha in reachable), None)

    def commit_flat(self, sha: str) -> Flat:
        commit = self.get(sha, Commit)
        assert commit is not None, sha
        return self.flatten(commit.tree)

    def resolve(self, ref: str) -> str | None:
        """A commit sha from a full or unique abbreviated (>= 7) sha, a branch, a tag, or a full ref."""
        lowered = ref.lower()
        if _SHA_RE.match(lowered) and isinstance(self.objects.get(lowered), Commit):
            return lowered
        for name in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}"):
            if name in self.refs:
                return self.refs[name]
        if len(lowered) >= 7 and re.fullmatch(r"[0-9a-f]+", lowered):
            matches = [s for s, o in self.objects.items() if s.startswith(lowered) and isinstance(o, Commit)]
            if len(matches) == 1:
                return matches[0]
        return None

    def reachable(self, extra: Iterable[str] = ()) -> set[str]:
        seen: set[str] = set()
        stack = [*self.refs.values(), *extra]
        while stack:
            sha = stack.pop()
            if sha in seen or sha not in self.objects:
                continue
            seen.add(sha)
            obj = self.objects[sha]
            if isinstance(obj, Commit):
                stack.extend([obj.tree, *obj.parents])
            elif isinstance(obj, Tree):
                stack.extend(e.sha for e in obj.entries if e.mode != GITLINK_MODE)
        return seen


# --------------------------------------------------------------------------------------------------
# Requests, responses, faults
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake saw it: `path` percent-decoded, header names lower-case, `json` the parsed
    body (None if none or not JSON), `status` the answer (0 for a dropped connection), `time` from
    `time.monotonic()` when it arrived, `fault` whether an injected fault answered it, `connection` a
    number per TCP connection (requests made over one kept-alive connection share it)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any
    status: int
    time: float
    fault: bool = False
    connection: int = 0

    @property
    def api_version(self) -> str | None:
        return self.headers.get("x-github-api-version")


def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, payload, headers, indent=2)  # GitHub pretty-prints its JSON


def _error_body(status: int, message: str, documentation_url: str = DOCS_URL) -> dict[str, Any]:
    return {"message": message, "documentation_url": documentation_url, "status": str(status)}


class _ApiError(Exception):
    """An error answered the way GitHub does."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        documentation_url: str = DOCS_URL,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors
        self.documentation_url = documentation_url
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = _error_body(self.status, self.message, self.documentation_url)
        if self.errors is not None:
            body = {"message": self.message, "errors": self.errors, **body}
        return _json_response(self.status, body, self.headers)


def _not_found() -> _ApiError:
    return _ApiError(404, "Not Found")


def _validation_failed(resource: str, code: str, **details: str) -> _ApiError:
    return _ApiError(422, "Validation Failed", errors=[{"resource": resource, "code": code, **details}])


@dataclass
class _Fault:
    pattern: str
    method: str | None
    remaining: int | None
    """Requests left to answer; None: every matching request until reset_faults()."""
    status: int = 502
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    applied: bool = False
    drop: bool = False
    skip: int = 0
    """Requests (of any kind) to let through before this fault starts matching (fail_after)."""
    latch: bool = False
    """Once matched, match every request after it (fail_from)."""
    latched: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.latched:
            return True
        return (self.method is None or self.method == method) and fnmatch.fnmatchcase(path, self.pattern)


# --------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------


class FakeGitHub(Served):
    """In-memory GitHub served over HTTP on 127.0.0.1. See the module docstring for the routes.

    Settable attributes: `token`, `user` (login of the token's owner), `user_id`, `rate_limit` (primary
    limit per window, default 5000), `rate_limit_window` (seconds, default 3600), `rate_limit_status`
    (403 or 429), `write_limit_per_minute` (None: no secondary limit), `api_versions`, `html_base`
    (prefix of `html_url`s, default https://github.com; nothing is served there).
    """

    def __init__(self, *, token: str = DEFAULT_TOKEN, user: str = "superweight-bot") -> None:
        self.token = token
        self.user = user
        self._people: dict[str, str] = {}  # token -> login, for users other than the bot
        self.user_id = 1001
        self.rate_limit = 5000
        self.rate_limit_window = 3600.0
        self.rate_limit_status = 403
        self.write_limit_per_minute: int | None = None
        self.api_versions: set[str] = {API_VERSION}
        self.html_base = "https://github.com"
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._writes: list[float] = []
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._clock = _EPOCH
        self._window_start = time.time()
        self._used = 0

    def add_user(self, login: str) -> str:
        """Another person on GitHub: returns a token that acts as `login`."""
        token = "ghp_" + hashlib.sha1(login.encode()).hexdigest()[:36]
        with self._lock:
            self._people[token] = login
        return token

    # -- lifecycle ---------------------------------------------------------------------------------

    def make_server(self) -> _Server:
        return _Server(self)

    # -- content -----------------------------------------------------------------------------------

    def add_repo(
        self,
        full_name: str,
        files: Mapping[str, bytes] | None = None,
        *,
        default_branch: str = "main",
        private: bool = False,
        message: str = "Initial commit",
    ) -> str | None:
        """Create `owner/name` with one commit on `default_branch` holding `files` ({path: bytes}; paths
        with slashes make folders). `files=None` makes an empty repository (no commits, no branch).
        Returns the commit sha (None for an empty repository)."""
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"not an owner/name: {full_name!r}")
        with self._lock:
            if full_name.lower() in self._repos:
                raise ValueError(f"{full_name} already exists")
            repo = _Repo(next(self._ids), owner, name, default_branch, private, self._tick())
            self._repos[full_name.lower()] = repo
            if files is None:
                return None
            return self._commit_files(repo, None, files, (), message, default_branch)

    def add_commit(
        self,
        repo: str,
        files: Mapping[str, bytes] | None = None,
        *,
        branch: str | None = None,
        delete: Iterable[str] = (),
        message: str = "Update files",
    ) -> str:
        """Commit on `branch` (default branch if None; created from the default branch if missing), as
        someone else pushing: `files` added or replaced, `delete` removed. Returns the commit sha."""
        with self._lock:
            r = self._repo(repo)
            branch = branch or r.default_branch
            parent = r.refs.get(f"refs/heads/{branch}") or r.refs.get(f"refs/heads/{r.default_branch}")
            return self._commit_files(r, parent, files or {}, delete, message, branch)

    def set_branch(self, repo: str, branch: str, sha: str | None) -> None:
        """Point `branch` at commit `sha` (creating it), or delete it with None; no checks."""
        with self._lock:
            r = self._repo(repo)
            self._set_ref(r, f"refs/heads/{branch}", sha)

    def add_label(self, repo: str, name: str, color: str = "ededed", description: str | None = None) -> None:
        """Create a label in the repository (labels applied through the API are created on the fly)."""
        with self._lock:
            r = self._repo(repo)
            r.labels[name.lower()] = Label(next(self._ids), name, color, description)

    def merge_pull(self, repo: str, number: int, *, method: Literal["merge", "squash"] = "merge") -> str:
        """Merge a pull request as a maintainer would (a three-way merge; ValueError on conflicts).
        Returns the sha of the new commit on the base branch."""
        with self._lock:
            r = self._repo(repo)
            return self._merge(r, r.pulls[number], method, None, None)

    def _commit_files(
        self,
        repo: _Repo,
        parent: str | None,
        files: Mapping[str, bytes],
        delete: Iterable[str],
        message: str,
        branch: str,
    ) -> str:
        flat = repo.commit_flat(parent) if parent else {}
        for path in delete:
            del flat[path]
        for path, data in files.items():
            flat = {p: v for p, v in flat.items() if not p.startswith(f"{path}/")}
            flat[path] = ("100644", repo.store(Blob(bytes(data))))
        when = self._tick()
        person = Signature("Test Maintainer", "maintainer@example.com", when)
        commit = Commit(repo.store_flat(flat), (parent,) if parent else (), person, person, message)
        sha = repo.store(commit)
        self._set_ref(repo, f"refs/heads/{branch}", sha)
        return sha

    # -- inspection --------------------------------------------------------------------------------

    def branch_sha(self, repo: str, branch: str) -> str | None:
        with self._lock:
            return self._repo(repo).refs.get(f"refs/heads/{branch}")

    def refs(self, repo: str) -> dict[str, str]:
        """Every ref, e.g. {"refs/heads/main": sha}."""
        with self._lock:
            return dict(self._repo(repo).refs)

    def files_at(self, repo: str, ref: str) -> dict[str, bytes]:
        """Every file (path -> bytes) of a branch, tag, commit sha or tree sha; gitlinks left out."""
        with self._lock:
            r = self._repo(repo)
            commit = r.resolve(ref)
            if commit is not None:
                tree_sha = r.objects[commit].tree  # type: ignore[union-attr]
            elif r.get(ref, Tree) is not None:
                tree_sha = ref
            else:
                raise KeyError(f"{repo}: no ref or tree {ref!r}")
            return {
                path: r.objects[sha].data  # type: ignore[union-attr]
                for path, (mode, sha) in r.flatten(tree_sha).items()
                if mode != GITLINK_MODE
            }

    def commit(self, repo: str, ref: str) -> Commit:
        """The commit a branch, tag or sha points at."""
        with self._lock:
            r = self._repo(repo)
            sha = r.resolve(ref)
            if sha is None:
                raise KeyError(f"{repo}: no commit {ref!r}")
            return r.objects[sha]  # type: ignore[return-value]

    def pulls(self, repo: str) -> list[PullRequest]:
        """Copies of every pull request, by number."""
        with self._lock:
            return [copy.deepcopy(pr) for _, pr in sorted(self._repo(repo).pulls.items())]

    def comments(self, repo: str, number: int) -> list[Comment]:
        with self._lock:
            return [copy.deepcopy(c) for c in self._repo(repo).comments.values() if c.number == number]

    def labels(self, repo: str, number: int) -> list[str]:
        """Names of the labels on issue / pull request `number`, in GitHub's (alphabetical) order."""
        with self._lock:
            return list(self._repo(repo).pulls[number].labels)

    def statuses(self, repo: str, sha: str) -> list[Status]:
        """Every status posted for a commit, oldest first."""
        with self._lock:
            return [copy.deepcopy(s) for s in self._repo(repo).statuses.get(sha, [])]

    def objects_count(self, repo: str) -> int:
        with self._lock:
            return len(self._repo(repo).objects)

    def dangling_objects(self, repo: str) -> set[str]:
        """Objects reachable from no ref and no pull request head (a publish that stopped halfway leaves
        some; GitHub keeps them too, unreferenced)."""
        with self._lock:
            r = self._repo(repo)
            return set(r.objects) - r.reachable(pr.head_sha for pr in r.pulls.values())

    # -- faults and observation --------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def rate_limit_used(self) -> int:
        with self._lock:
            self._roll_window(time.time())
            return self._used

    def reset_rate_limit(self) -> None:
        """Start a new primary rate-limit window now, with nothing used."""
        with self._lock:
            self._window_start, self._used = time.time(), 0

    def fail_next(
        self,
        pattern: str,
        status: int = 502,
        times: int = 1,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        applied: bool = False,
    ) -> None:
        """Answer `status` to the next `times` requests whose decoded path matches the fnmatch `pattern`
        (e.g. "/repos/*/git/trees"; `*` also matches "/") and `method`, if given. `body`: a JSON value, or
        str / bytes sent as text/html (default: GitHub's error JSON with the status phrase); `headers`
        are added (e.g. {"retry-after": "1"}). With `applied`, the request is first carried out (and
        counted), only its answer is replaced."""
        with self._lock:
            self._faults.append(_Fault(pattern, method, times, status, dict(headers or {}), body, applied=applied))

    def secondary_rate_limit(
        self,
        pattern: str = "*",
        times: int = 1,
        method: str | None = None,
        *,
        retry_after: int | None = 1,
        status: int = 403,
    ) -> None:
        """Answer the next matching requests like GitHub's secondary rate limit: 403 (or 429) "You have
        exceeded a secondary rate limit...", `retry-after` if given, primary headers with requests left."""
        body = _error_body(status, SECONDARY_RATE_LIMIT_MESSAGE, SECONDARY_RATE_LIMIT_DOCS_URL)
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        self.fail_next(pattern, status, times, method, headers, body)

    def drop_next(self, pattern: str, times: int = 1, method: str | None = None, *, applied: bool = False) -> None:
        """Close the connection without answering the next matching requests (the client gets a
        `requests.ConnectionError`); with `applied`, after carrying them out."""
        with self._lock:
            self._faults.append(_Fault(pattern, method, times, drop=True, applied=applied))

    def fail_after(
        self,
        n_requests: int,
        status: int = 500,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Let the next `n_requests` requests through, then answer `status` to every request until
        reset_faults()."""
        with self._lock:
            self._faults.append(_Fault("*", None, None, status, dict(headers or {}), body, skip=n_requests))

    def fail_from(
        self,
        pattern: str,
        status: int = 500,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """From the first request matching `pattern` (and `method`) on, that one included, answer
        `status` to every request until reset_faults()."""
        with self._lock:
            self._faults.append(_Fault(pattern, method, None, status, dict(headers or {}), body, latch=True))

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            chosen = None
            for fault in list(self._faults):
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if chosen is None and fault.matches(method, path):
                    chosen = fault
            if chosen is not None:
                chosen.latched = chosen.latch
                if chosen.remaining is not None:
                    chosen.remaining -= 1
                    if chosen.remaining <= 0:
                        self._faults.remove(chosen)
            return chosen

    # -- internals ---------------------------------------------------------------------------------

    def _repo(self, full_name: str) -> _Repo:
        try:
            return self._repos[full_name.lower()]
        except KeyError:
            raise KeyError(f"no repository {full_name!r}") from None

    def _tick(self) -> datetime:
        """The deterministic clock: one second per use."""
        self._clock += timedelta(seconds=1)
        return self._clock

    def _set_ref(self, repo: _Repo, ref: str, sha: str | None) -> None:
        """Move, create or delete a ref, and keep open pull requests in step, like GitHub: they follow
        their head branch, and are closed when their head or base branch is deleted."""
        if sha is None:
            repo.refs.pop(ref, None)
        else:
            repo.refs[ref] = sha
        if not ref.startswith("refs/heads/"):
            return
        branch = ref.removeprefix("refs/heads/")
        for pr in repo.pulls.values():
            if pr.state != "open" or branch not in (pr.head, pr.base):
                continue
            if sha is None:
                pr.state, pr.closed_at = "closed", self._tick()
                pr.updated_at = pr.closed_at
            elif pr.head == branch:
                pr.head_sha, pr.updated_at = sha, self._tick()
            else:
                pr.base_sha = sha

    def _merge(
        self,
        repo: _Repo,
        pr: PullRequest,
        method: str,
        title: str | None,
        message: str | None,
    ) -> str:
        base_sha = repo.refs[f"refs/heads/{pr.base}"]
        merged = self._three_way(repo, base_sha, pr.head_sha)
        if merged is None or pr.state != "open":
            raise ValueError(f"pull request #{pr.number} is not mergeable")
        when = self._tick()
        person = Signature(self.user, self._email(), when)
        if method == "squash":
            text = f"{title or f'{pr.title} (#{pr.number})'}\n\n{message or ''}".rstrip() + "\n"
            parents: tuple[str, ...] = (base_sha,)
        else:
            default = f"Merge pull request #{pr.number} from {repo.owner}/{pr.head}"
            text = f"{title or default}\n\n{message if message is not None else pr.title}".rstrip() + "\n"
            parents = (base_sha, pr.head_sha)
        sha = repo.store(Commit(repo.store_flat(merged), parents, person, person, text))
        pr.state, pr.merged_at, pr.closed_at, pr.updated_at = "closed", when, when, when
        pr.merge_commit_sha = sha
        self._set_ref(repo, f"refs/heads/{pr.base}", sha)
        return sha

    @staticmethod
    def _three_way(repo: _Repo, base_sha: str, head_sha: str) -> Flat | None:
        """The merged files, or None on a conflict."""
        ancestor = repo.merge_base(base_sha, head_sha)
        old = repo.commit_flat(ancestor) if ancestor else {}
        ours, theirs = repo.commit_flat(base_sha), repo.commit_flat(head_sha)
        merged: Flat = {}
        for path in sorted({*old, *ours, *theirs}):
            o, a, b = old.get(path), ours.get(path), theirs.get(path)
            if a == b or o == b:
                result = a
            elif o == a:
                result = b
            else:
                return None
            if result is not None:
                merged[path] = result
        return merged

    def _email(self) -> str:
        return f"{self.user_id}+{self.user}@users.noreply.github.com"

    def _roll_window(self, now: float) -> None:
        if now >= self._window_start + self.rate_limit_window:
            self._window_start, self._used = now, 0

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(max(self.rate_limit - self._used, 0)),
            "x-ratelimit-used": str(min(self._used, self.rate_limit)),
            "x-ratelimit-reset": str(math.ceil(self._window_start + self.rate_limit_window)),
            "x-ratelimit-resource": "core",
        }

    def _rate_json(self) -> dict[str, int]:
        headers = self._rate_headers()
        return {
            "limit": self.rate_limit,
            "used": int(headers["x-ratelimit-used"]),
            "remaining": int(headers["x-ratelimit-remaining"]),
            "reset": int(headers["x-ratelimit-reset"]),
        }

    # -- request handling (called from the server threads) -----------------------------------------

    def _handle(self, request: Request) -> tuple[Response, bool]:
        """Answer one request; the second value says to close the connection without answering."""
        fault = self._take_fault(request.method, request.path)
        request_id = f"FAKE:{next(self._request_ids):08X}"
        response = Response(0)
        if fault is None or fault.applied:
            response = self._process(request, request_id)
        if fault is not None:
            response = Response(0) if fault.drop else self._fault_response(fault, request_id)
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    request.query,
                    request.headers,
                    request.parsed_json(),
                    response.status,
                    request.arrived,
                    fault is not None,
                    request.connection,
                )
            )
        return response, fault is not None and fault.drop

    def _fault_response(self, fault: _Fault, request_id: str) -> Response:
        with self._lock:
            headers = {"X-GitHub-Request-Id": request_id}
            if fault.status < 500:
                self._roll_window(time.time())
                headers |= self._rate_headers()
            body = fault.body
            if body is None:
                body = _error_body(fault.status, HTTPStatus(fault.status).phrase)
            if isinstance(body, Mapping) and "{request_id}" in str(body.get("message", "")):
                body = {**body, "message": str(body["message"]).format(request_id=request_id)}
            if isinstance(body, str | bytes):
                raw = body.encode() if isinstance(body, str) else body
                response = Response(fault.status, raw, {"Content-Type": "text/html; charset=utf-8"})
            else:
                response = _json_response(fault.status, body)
            response.headers.update(headers)
            response.headers.update(fault.headers)
            return response

    def _process(self, request: Request, request_id: str) -> Response:
        with self._lock:
            now = time.time()
            self._roll_window(now)
            counted = False
            version = request.headers.get("x-github-api-version")
            common = {
                "X-GitHub-Request-Id": request_id,
                "X-GitHub-Media-Type": "github.v3; format=json",
                "X-GitHub-Api-Version-Selected": version or API_VERSION,
            }
            try:
                scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
                if not scheme:
                    raise _ApiError(401, "Requires authentication")
                token = token.strip()
                login = self.user if token == self.token else self._people.get(token)
                if scheme.lower() not in ("bearer", "token") or login is None:
                    raise _ApiError(401, "Bad credentials")
                if version is not None and version not in self.api_versions:
                    raise _ApiError(
                        400,
                        f"API version {version} is not supported.",
                        documentation_url="https://docs.github.com/rest/overview/api-versions",
                    )
                is_rate_limit = request.segments == ["rate_limit"]
                if not is_rate_limit and self._used >= self.rate_limit:
                    raise _ApiError(
                        self.rate_limit_status,
                        f"API rate limit exceeded for user ID {self.user_id}. If you reach out to GitHub "
                        f"Support for help, please include the request ID {request_id} and timestamp "
                        f"{_iso(datetime.now(timezone.utc))}.",
                        documentation_url=RATE_LIMIT_DOCS_URL,
                    )
                if request.method in _WRITE_METHODS and self.write_limit_per_minute is not None:
                    self._writes = [t for t in self._writes if t > request.arrived - 60]
                    if len(self._writes) >= self.write_limit_per_minute:
                        wait = math.ceil(self._writes[0] + 60 - request.arrived)
                        raise _ApiError(
                            403,
                            SECONDARY_RATE_LIMIT_MESSAGE.format(request_id=request_id),
                            documentation_url=SECONDARY_RATE_LIMIT_DOCS_URL,
                            headers={"retry-after": str(max(wait, 1))},
                        )
                    self._writes.append(request.arrived)
                counted = not is_rate_limit
                response = _Routes(self, request, login).dispatch()
            except _ApiError as error:
                response = error.response()
            except Exception as error:  # a bug in the fake: show it to the test instead of hanging
                response = _ApiError(500, f"FakeGitHub internal error: {error!r}").response()
            if request.method in ("GET", "HEAD") and response.status == 200:
                etag = f'"{hashlib.sha256(response.body).hexdigest()}"'
                response.headers["ETag"] = etag
                response.headers.setdefault("Cache-Control", "private, max-age=60, s-maxage=60")
                if _etag_matches(request.headers.get("if-none-match"), etag):
                    counted = False
                    response = Response(304, b"", {"ETag": etag, "Cache-Control": "private, max-age=60"})
            if counted:
                self._used += 1
            response.headers.update(common)
            response.headers.update(self._rate_headers())
            return response


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------


class _Routes:
    """Routing and payloads for one request. Runs with the fake's lock held; a route validates
    everything before it changes anything, so that a refused request leaves no trace."""

    def __init__(self, gh: FakeGitHub, request: Request, login: str) -> None:
        self.gh = gh
        self.request = request
        self.login = login
        """Who the request's token acts as."""
        self.api = request.base_url

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(self) -> Response:
        method = "GET" if self.request.method == "HEAD" else self.request.method
        segs = self.request.segments
        if segs == ["rate_limit"] and method == "GET":
            core = self.gh._rate_json()
            reset = core["reset"]
            resources = {
                "core": core,
                "search": {"limit": 30, "used": 0, "remaining": 30, "reset": reset},
                "graphql": {"limit": 5000, "used": 0, "remaining": 5000, "reset": reset},
            }
            return _json_response(200, {"resources": resources, "rate": core})
        if segs == ["user"] and method == "GET":
            return _json_response(200, self.user_json(self.login))
        if len(segs) >= 3 and segs[0] == "repos":
            repo = self.gh._repos.get(f"{segs[1]}/{segs[2]}".lower())
            if repo is None:
                raise _not_found()
            return self.repo_route(repo, method, segs[3:])
        raise _not_found()

    def repo_route(self, repo: _Repo, method: str, rest: list[str]) -> Response:
        head = rest[0] if rest else ""
        if not rest and method == "GET":
            return _json_response(200, self.repo_json(repo, full=True))
        if head == "git" and len(rest) >= 2:
            if not repo.objects:
                raise _ApiError(409, "Git Repository is empty.")
            return self.git_route(repo, method, rest[1], rest[2:])
        if head == "contents" and method == "GET":
            return self.contents(repo, "/".join(rest[1:]).strip("/"))
        if head == "pulls":
            return self.pulls_route(repo, method, rest[1:])
        if head == "issues":
            return self.issues_route(repo, method, rest[1:])
        if head == "labels":
            if len(rest) == 1 and method == "GET":
                labels = sorted(repo.labels.values(), key=lambda label: label.name.lower())
                page, links = self.paginate(labels)
                return _json_response(200, [self.label_json(repo, label) for label in page], links)
            if len(rest) == 1 and method == "POST":
                return self.create_label(repo)
            if len(rest) == 2 and method == "GET":
                label = repo.labels.get(rest[1].lower())
                if label is None:
                    raise _not_found()
                return _json_response(200, self.label_json(repo, label))
        if head == "statuses" and len(rest) == 2 and method == "POST":
            return self.create_status(repo, rest[1])
        if head == "commits" and len(rest) == 1 and method == "GET":
            return self.list_commits(repo)
        if head == "commits" and len(rest) == 3 and rest[2] == "pulls" and method == "GET":
            return self.commit_pulls(repo, rest[1])
        if head == "commits" and len(rest) >= 3 and method == "GET" and rest[-1] in ("status", "statuses"):
            ref = "/".join(rest[1:-1])
            sha = repo.resolve(ref)
            if sha is None:
                raise _ApiError(422, f"No commit found for SHA: {ref}")
            return self.combined_status(repo, sha) if rest[-1] == "status" else self.list_statuses(repo, sha)
        raise _not_found()

    def list_commits(self, repo: _Repo) -> Response:
        """GET /commits?sha=&path=: commits reachable from `sha` (default branch), newest first; with `path`,
        only those whose tree changes that path relative to their first parent."""
        start = repo.resolve(self.request.param("sha") or repo.default_branch)
        if start is None:
            raise _ApiError(404, "No commit found for SHA")
        path = (self.request.param("path") or "").strip("/")
        found = []
        for sha in repo.ancestors(start):
            commit = repo.get(sha, Commit)
            if path:
                mine = repo.commit_flat(sha).get(path)
                parent = repo.commit_flat(commit.parents[0]).get(path) if commit.parents else None
                if mine == parent:
                    continue
            found.append(sha)
        page, links = self.paginate(found)
        return _json_response(200, [self.commit_json(repo, sha) for sha in page], links)

    def commit_pulls(self, repo: _Repo, ref: str) -> Response:
        """GET /commits/{sha}/pulls: the pull requests that brought the commit (merged ones, or open ones
        whose head contains it)."""
        sha = repo.resolve(ref)
        if sha is None:
            raise _ApiError(422, f"No commit found for SHA: {ref}")
        pulls = [
            pr for pr in sorted(repo.pulls.values(), key=lambda p: p.number)
            if sha in (pr.head_sha, pr.merge_commit_sha)
            or (sha in repo.ancestors(pr.head_sha) and not repo.is_ancestor(sha, pr.base_sha))
        ]  # fmt: skip
        return _json_response(200, [self.pull_json(repo, pr, full=False) for pr in pulls])

    # -- request bodies ----------------------------------------------------------------------------

    def json_body(self) -> Any:
        if not self.request.body.strip():
            return {}
        try:
            return json.loads(self.request.body)
        except ValueError:
            raise _ApiError(400, "Problems parsing JSON") from None

    def json_object(self) -> dict[str, Any]:
        body = self.json_body()
        if not isinstance(body, dict):
            raise _ApiError(400, "Problems parsing JSON")
        return body

    @staticmethod
    def get_field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
        """`body[name]`, checked like GitHub's schema validation (422 "Invalid request.")."""
        if name not in body or (body[name] is None and not required):
            if required:
                raise _ApiError(422, f'Invalid request.\n\n"{name}" wasn\'t supplied.')
            return None
        value = body[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join({str: "string", bool: "boolean", list: "array", int: "integer"}[k] for k in kinds)
            raise _ApiError(422, f"Invalid request.\n\nFor 'properties/{name}', {json.dumps(value)} is not a {names}.")
        return value

    # -- pagination --------------------------------------------------------------------------------

    def int_param(self, name: str, default: int) -> int:
        try:
            return int(self.request.param(name) or default)
        except ValueError:
            return default

    def paginate(self, items: list[T], default: int = 30) -> tuple[list[T], dict[str, str]]:
        """GitHub's pagination: `per_page` (default 30, at most 100), `page`, and a Link header."""
        per_page = self.int_param("per_page", default)
        per_page = default if per_page < 1 else min(per_page, 100)
        page = max(self.int_param("page", 1), 1)
        last = max(math.ceil(len(items) / per_page), 1)
        query = [(k, v) for k, values in self.request.query.items() if k != "page" for v in values]

        def link(number: int, rel: str) -> str:
            url = f"{self.api}{self.request.raw_path}?{urlencode([*query, ('page', number)])}"
            return f'<{url}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(min(page - 1, last), "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        start = (page - 1) * per_page
        return items[start : start + per_page], ({"Link": ", ".join(links)} if links else {})

    # -- payloads ----------------------------------------------------------------------------------

    def repo_api(self, repo: _Repo) -> str:
        return f"{self.api}/repos/{repo.full_name}"

    def html(self, repo: _Repo, *parts: str) -> str:
        return "/".join([self.gh.html_base, repo.full_name, *parts])

    def user_json(self, login: str) -> dict[str, Any]:
        user_id = (
            self.gh.user_id if login == self.gh.user else 1 + int(hashlib.sha1(login.encode()).hexdigest()[:6], 16)
        )
        return {
            "login": login,
            "id": user_id,
            "type": "User",
            "site_admin": False,
            "url": f"{self.api}/users/{login}",
            "html_url": f"{self.gh.html_base}/{login}",
        }

    def repo_json(self, repo: _Repo, *, full: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": repo.id,
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": {**self.user_json(repo.owner), "type": "Organization"},
            "html_url": self.html(repo),
            "url": self.repo_api(repo),
            "fork": False,
            "default_branch": repo.default_branch,
            "visibility": "private" if repo.private else "public",
        }
        if full:
            data |= {
                "created_at": _iso(repo.created_at),
                "pushed_at": _iso(repo.created_at),
                "archived": False,
                "disabled": False,
                "has_issues": True,
                "open_issues_count": sum(pr.state == "open" for pr in repo.pulls.values()),
                "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
                "allow_squash_merge": True,
                "allow_merge_commit": True,
                "allow_rebase_merge": False,
                "delete_branch_on_merge": False,
            }
        return data

    def ref_json(self, repo: _Repo, ref: str) -> dict[str, Any]:
        sha = repo.refs[ref]
        kind = repo.objects[sha].kind
        return {
            "ref": ref,
            "url": f"{self.repo_api(repo)}/git/{ref}",
            "object": {"sha": sha, "type": kind, "url": f"{self.repo_api(repo)}/git/{kind}s/{sha}"},
        }

    def commit_json(self, repo: _Repo, sha: str) -> dict[str, Any]:
        commit = repo.objects[sha]
        assert isinstance(commit, Commit)
        api = self.repo_api(repo)
        return {
            "sha": sha,
            "url": f"{api}/git/commits/{sha}",
            "html_url": self.html(repo, "commit", sha),
            "author": commit.author.to_json(),
            "committer": commit.committer.to_json(),
            "tree": {"sha": commit.tree, "url": f"{api}/git/trees/{commit.tree}"},
            "message": commit.message,
            "parents": [
                {"sha": p, "url": f"{api}/git/commits/{p}", "html_url": self.html(repo, "commit", p)}
                for p in commit.parents
            ],
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None},
        }

    def tree_json(self, repo: _Repo, sha: str, *, recursive: bool) -> dict[str, Any]:
        api = self.repo_api(repo)
        tree = repo.get(sha, Tree)
        assert tree is not None
        pairs = repo.walk(sha) if recursive else ((e.name, e) for e in tree.entries)
        entries = []
        for path, entry in pairs:
            item: dict[str, Any] = {"path": path, "mode": entry.mode, "type": entry.type, "sha": entry.sha}
            if entry.type == "blob":
                item["size"] = len(repo.objects[entry.sha].data)  # type: ignore[union-attr]
                item["url"] = f"{api}/git/blobs/{entry.sha}"
            elif entry.type == "tree":
                item["url"] = f"{api}/git/trees/{entry.sha}"
            entries.append(item)
        return {"sha": sha, "url": f"{api}/git/trees/{sha}", "tree": entries, "truncated": False}

    def label_json(self, repo: _Repo, label: Label) -> dict[str, Any]:
        return {
            "id": label.id,
            "url": f"{self.repo_api(repo)}/labels/{quote(label.name, safe='')}",
            "name": label.name,
            "color": label.color,
            "default": label.default,
            "description": label.description,
        }

    def pr_labels(self, repo: _Repo, pr: PullRequest) -> list[dict[str, Any]]:
        return [self.label_json(repo, repo.labels[name.lower()]) for name in pr.labels]

    def pull_json(self, repo: _Repo, pr: PullRequest, *, full: bool = True) -> dict[str, Any]:
        api = self.repo_api(repo)
        base_sha = repo.refs.get(f"refs/heads/{pr.base}", pr.base_sha)
        data: dict[str, Any] = {
            "url": f"{api}/pulls/{pr.number}",
            "id": pr.id,
            "html_url": self.html(repo, "pull", str(pr.number)),
            "diff_url": self.html(repo, "pull", f"{pr.number}.diff"),
            "patch_url": self.html(repo, "pull", f"{pr.number}.patch"),
            "issue_url": f"{api}/issues/{pr.number}",
            "commits_url": f"{api}/pulls/{pr.number}/commits",
            "comments_url": f"{api}/issues/{pr.number}/comments",
            "statuses_url": f"{api}/statuses/{pr.head_sha}",
            "number": pr.number,
            "state": pr.state,
            "locked": False,
            "title": pr.title,
            "user": self.user_json(pr.user),
            "body": pr.body,
            "labels": self.pr_labels(repo, pr),
            "milestone": None,
            "created_at": _iso(pr.created_at),
            "updated_at": _iso(pr.updated_at),
            "closed_at": _iso(pr.closed_at) if pr.closed_at else None,
            "merged_at": _iso(pr.merged_at) if pr.merged_at else None,
            "merge_commit_sha": pr.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "draft": pr.draft,
            "head": self.branch_json(repo, pr.head, pr.head_sha),
            "base": self.branch_json(repo, pr.base, base_sha),
            "author_association": "CONTRIBUTOR",
        }
        if full:
            base_point = repo.merge_base(base_sha, pr.head_sha)
            files = self.changed_files(repo, base_point, pr.head_sha)
            mergeable = self.gh._three_way(repo, base_sha, pr.head_sha) is not None
            ahead = set(repo.ancestors(pr.head_sha)) - set(repo.ancestors(base_sha))
            data |= {
                "merged": pr.merged,
                "mergeable": mergeable if pr.state == "open" else None,
                "mergeable_state": ("clean" if mergeable else "dirty") if pr.state == "open" else "unknown",
                "merged_by": self.user_json(self.gh.user) if pr.merged else None,
                "comments": sum(c.number == pr.number for c in repo.comments.values()),
                "review_comments": 0,
                "commits": len(ahead),
                "additions": sum(f["additions"] for f in files),
                "deletions": sum(f["deletions"] for f in files),
                "changed_files": len(files),
            }
        return data

    def branch_json(self, repo: _Repo, branch: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{repo.owner}:{branch}",
            "ref": branch,
            "sha": sha,
            "user": self.user_json(repo.owner),
            "repo": self.repo_json(repo),
        }

    def issue_json(self, repo: _Repo, pr: PullRequest) -> dict[str, Any]:
        api = self.repo_api(repo)
        return {
            "url": f"{api}/issues/{pr.number}",
            "repository_url": api,
            "labels_url": f"{api}/issues/{pr.number}/labels{{/name}}",
            "comments_url": f"{api}/issues/{pr.number}/comments",
            "html_url": self.html(repo, "pull", str(pr.number)),
            "id": pr.issue_id,
            "number": pr.number,
            "title": pr.title,
            "user": self.user_json(pr.user),
            "labels": self.pr_labels(repo, pr),
            "state": pr.state,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": sum(c.number == pr.number for c in repo.comments.values()),
            "created_at": _iso(pr.created_at),
            "updated_at": _iso(pr.updated_at),
            "closed_at": _iso(pr.closed_at) if pr.closed_at else None,
            "author_association": "CONTRIBUTOR",
            "draft": pr.draft,
            "pull_request": {
                "url": f"{api}/pulls/{pr.number}",
                "html_url": self.html(repo, "pull", str(pr.number)),
                "diff_url": self.html(repo, "pull", f"{pr.number}.diff"),
                "patch_url": self.html(repo, "pull", f"{pr.number}.patch"),
                "merged_at": _iso(pr.merged_at) if pr.merged_at else None,
            },
            "body": pr.body,
            "state_reason": ("completed" if pr.merged else None) if pr.state == "closed" else None,
        }

    def comment_json(self, repo: _Repo, comment: Comment) -> dict[str, Any]:
        api = self.repo_api(repo)
        return {
            "url": f"{api}/issues/comments/{comment.id}",
            "html_url": self.html(repo, "pull", f"{comment.number}#issuecomment-{comment.id}"),
            "issue_url": f"{api}/issues/{comment.number}",
            "id": comment.id,
            "user": self.user_json(comment.user),
            "created_at": _iso(comment.created_at),
            "updated_at": _iso(comment.updated_at),
            "author_association": "CONTRIBUTOR",
            "body": comment.body,
        }

    def status_json(self, repo: _Repo, status: Status) -> dict[str, Any]:
        return {
            "url": f"{self.repo_api(repo)}/statuses/{status.sha}",
            "avatar_url": None,
            "id": status.id,
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": _iso(status.created_at),
            "updated_at": _iso(status.created_at),
            "creator": self.user_json(status.creator),
        }

    # -- git data ----------------------------------------------------------------------------------

    def git_route(self, repo: _Repo, method: str, kind: str, rest: list[str]) -> Response:
        name = "/".join(rest)
        if kind == "ref" and rest and method == "GET":
            ref = f"refs/{name}"
            if ref not in repo.refs:
                raise _not_found()
            return _json_response(200, self.ref_json(repo, ref))
        if kind == "matching-refs" and method == "GET":
            prefix = f"refs/{name}"
            return _json_response(200, [self.ref_json(repo, r) for r in sorted(repo.refs) if r.startswith(prefix)])
        if kind == "refs":
            if method == "POST" and not rest:
                return self.create_ref(repo)
            if method == "GET":
                ref = f"refs/{name}".rstrip("/")
                if ref in repo.refs:
                    return _json_response(200, self.ref_json(repo, ref))
                matching = [r for r in sorted(repo.refs) if r.startswith(f"{ref}/" if not rest else ref)]
                if not matching:
                    raise _not_found()
                return _json_response(200, [self.ref_json(repo, r) for r in matching])
            if method == "PATCH" and rest:
                return self.update_ref(repo, f"refs/{name}")
            if method == "DELETE" and rest:
                return self.delete_ref(repo, f"refs/{name}")
        if kind == "blobs":
            if method == "POST" and not rest:
                return self.create_blob(repo)
            if method == "GET" and len(rest) == 1 and (blob := repo.get(rest[0].lower(), Blob)):
                sha = rest[0].lower()
                return _json_response(
                    200,
                    {
                        "sha": sha,
                        "size": len(blob.data),
                        "url": f"{self.repo_api(repo)}/git/blobs/{sha}",
                        "content": _wrapped_b64(blob.data),
                        "encoding": "base64",
                    },
                )
        if kind == "trees":
            if method == "POST" and not rest:
                return self.create_tree(repo)
            if method == "GET" and rest:
                tree_sha = self.tree_ish(repo, name)
                recursive = "recursive" in self.request.query
                return _json_response(200, self.tree_json(repo, tree_sha, recursive=recursive))
        if kind == "commits":
            if method == "POST" and not rest:
                return self.create_commit(repo)
            if method == "GET" and len(rest) == 1 and repo.get(rest[0].lower(), Commit):
                return _json_response(200, self.commit_json(repo, rest[0].lower()))
        raise _not_found()

    def tree_ish(self, repo: _Repo, name: str) -> str:
        if repo.get(name.lower(), Tree) is not None:
            return name.lower()
        commit = repo.resolve(name)
        if commit is None:
            raise _not_found()
        return repo.objects[commit].tree  # type: ignore[union-attr]

    def create_ref(self, repo: _Repo) -> Response:
        body = self.json_object()
        ref = self.get_field(body, "ref", str)
        sha = self.get_field(body, "sha", str).lower()
        if not ref.startswith("refs/") or ref.count("/") < 2 or not _valid_ref(ref):
            raise _ApiError(422, "Reference name is invalid")
        if ref in repo.refs:
            raise _ApiError(422, "Reference already exists")
        if any(r.startswith(f"{ref}/") or ref.startswith(f"{r}/") for r in repo.refs):
            raise _ApiError(422, "Reference update failed")  # git cannot hold both refs/heads/a and a/b
        if sha not in repo.objects or (ref.startswith("refs/heads/") and repo.get(sha, Commit) is None):
            raise _ApiError(422, "Object does not exist")
        self.gh._set_ref(repo, ref, sha)
        payload = self.ref_json(repo, ref)
        return _json_response(201, payload, {"Location": payload["url"]})

    def update_ref(self, repo: _Repo, ref: str) -> Response:
        body = self.json_object()
        sha = self.get_field(body, "sha", str).lower()
        force = self.get_field(body, "force", bool, required=False) or False
        if ref not in repo.refs:
            raise _ApiError(422, "Reference does not exist")
        if sha not in repo.objects or (ref.startswith("refs/heads/") and repo.get(sha, Commit) is None):
            raise _ApiError(422, "Object does not exist")
        if not force and not repo.is_ancestor(repo.refs[ref], sha):
            raise _ApiError(422, "Update is not a fast forward")
        self.gh._set_ref(repo, ref, sha)
        return _json_response(200, self.ref_json(repo, ref))

    def delete_ref(self, repo: _Repo, ref: str) -> Response:
        if ref not in repo.refs:
            raise _ApiError(422, "Reference does not exist")
        if ref == f"refs/heads/{repo.default_branch}":
            raise _ApiError(422, "Cannot delete the default branch")
        self.gh._set_ref(repo, ref, None)
        return Response(204)

    def create_blob(self, repo: _Repo) -> Response:
        body = self.json_object()
        content = self.get_field(body, "content", str)
        encoding = self.get_field(body, "encoding", str, required=False) or "utf-8"
        if encoding == "utf-8":
            data = content.encode()
        elif encoding == "base64":
            try:
                data = base64.b64decode(content)
            except binascii.Error:
                raise _ApiError(422, "Invalid base64 content") from None
        else:
            raise _ApiError(422, f"encoding must be one of utf-8 or base64, not {encoding}")
        sha = repo.store(Blob(data))
        url = f"{self.repo_api(repo)}/git/blobs/{sha}"
        return _json_response(201, {"sha": sha, "url": url}, {"Location": url})

    def create_tree(self, repo: _Repo) -> Response:
        body = self.json_object()
        entries = self.get_field(body, "tree", list)
        base_tree = self.get_field(body, "base_tree", str, required=False)
        flat: Flat = {}
        if base_tree is not None:
            if repo.get(base_tree.lower(), Tree) is None:
                raise _ApiError(422, "base_tree is not a valid tree oid")
            flat = repo.flatten(base_tree.lower())
        new_blobs: list[Blob] = []
        replacements, edits = [], []
        for entry in entries:
            if not isinstance(entry, dict):
                raise _ApiError(422, "Invalid request.\n\nFor 'items', tree entries must be objects.")
            path = self.get_field(entry, "path", str)
            mode = self.get_field(entry, "mode", str)
            kind = self.get_field(entry, "type", str)
            if mode not in _MODE_TYPES:
                raise _ApiError(422, f"Invalid request.\n\n{json.dumps(mode)} is not a valid tree.mode.")
            if kind != _MODE_TYPES[mode]:
                raise _ApiError(422, f"tree.type {kind} does not match tree.mode {mode}")
            if not _valid_path(path):
                raise _ApiError(422, "tree.path contains a malformed path component")
            content = entry.get("content")
            has_sha = "sha" in entry
            if content is not None and has_sha and entry["sha"] is not None:
                raise _ApiError(
                    422, "Must supply either tree.sha or tree.content. Request will be rejected if both are present."
                )
            if content is not None:
                if not isinstance(content, str) or kind != "blob":
                    raise _ApiError(422, "tree.content must be a string, for a blob")
                blob = Blob(content.encode())
                new_blobs.append(blob)
                edits.append((path, (mode, git_sha(blob))))
            elif not has_sha:
                raise _ApiError(422, "Must supply either tree.sha or tree.content.")
            elif entry["sha"] is None:
                edits.append((path, None))
            else:
                sha = self.get_field(entry, "sha", str).lower()
                wanted = {"blob": Blob, "tree": Tree}.get(kind)
                if wanted is not None and repo.get(sha, wanted) is None:
                    raise _ApiError(422, f"tree.sha {sha} is not a valid {kind}")
                if kind == "commit" and not _SHA_RE.match(sha):
                    raise _ApiError(422, f"tree.sha {sha} is not a valid commit")
                (replacements if kind == "tree" else edits).append((path, (mode, sha)))
        for path, value in [*replacements, *edits]:
            inside = [p for p in flat if p == path or p.startswith(f"{path}/")]
            if value is None:
                if not inside:
                    raise _ApiError(422, "GitRPC::BadObjectState")
                for p in inside:
                    del flat[p]
                continue
            for p in inside:
                del flat[p]
            parts = path.split("/")
            for i in range(1, len(parts)):  # a file where a folder must now be
                flat.pop("/".join(parts[:i]), None)
            mode, sha = value
            if mode == TREE_MODE:
                flat.update({f"{path}/{p}": v for p, v in repo.flatten(sha).items()})
            else:
                flat[path] = value
        for blob in new_blobs:
            repo.store(blob)
        sha = repo.store_flat(flat)
        payload = self.tree_json(repo, sha, recursive=False)
        return _json_response(201, payload, {"Location": payload["url"]})

    def create_commit(self, repo: _Repo) -> Response:
        body = self.json_object()
        message = self.get_field(body, "message", str)
        tree = self.get_field(body, "tree", str).lower()
        parents = self.get_field(body, "parents", list, required=False) or []
        if repo.get(tree, Tree) is None:
            raise _ApiError(422, "Tree SHA does not exist")
        for parent in parents:
            if not isinstance(parent, str) or repo.get(parent.lower(), Commit) is None:
                raise _ApiError(422, "Parent SHA does not exist or is not a commit object")
        when = self.gh._tick()
        author = self.signature(body, "author", Signature(self.login, self.gh._email(), when))
        committer = self.signature(body, "committer", author)
        commit = Commit(tree, tuple(p.lower() for p in parents), author, committer, message)
        sha = repo.store(commit)
        payload = self.commit_json(repo, sha)
        return _json_response(201, payload, {"Location": payload["url"]})

    def signature(self, body: Mapping[str, Any], name: str, default: Signature) -> Signature:
        value = body.get(name)
        if value is None:
            return default
        if not isinstance(value, dict):
            raise _ApiError(422, f"Invalid request.\n\nFor 'properties/{name}', {json.dumps(value)} is not an object.")
        person_name = self.get_field(value, "name", str)
        email = self.get_field(value, "email", str)
        date = self.get_field(value, "date", str, required=False)
        try:
            when = _parse_date(date) if date is not None else default.date
        except ValueError:
            raise _ApiError(422, f"Invalid request.\n\n{date} is not a valid date-time.") from None
        return Signature(person_name, email, when)

    # -- contents ----------------------------------------------------------------------------------

    def contents(self, repo: _Repo, path: str) -> Response:
        ref = self.request.param("ref") or repo.default_branch
        sha = repo.resolve(ref) if repo.objects else None
        if sha is None:
            if not repo.objects:
                raise _ApiError(404, "This repository is empty.")
            raise _ApiError(404, f"No commit found for the ref {ref}")
        tree = repo.objects[sha].tree  # type: ignore[union-attr]
        entries = dict(repo.walk(tree))
        api = self.repo_api(repo)

        def describe(p: str, entry: TreeEntry) -> dict[str, Any]:
            kind = {"blob": "file", "tree": "dir", "commit": "submodule"}[entry.type]
            size = len(repo.objects[entry.sha].data) if entry.type == "blob" else 0  # type: ignore[union-attr]
            git_kind = {"file": "blobs", "dir": "trees"}.get(kind)
            data = {
                "type": kind,
                "size": size,
                "name": p.rpartition("/")[2],
                "path": p,
                "sha": entry.sha,
                "url": f"{api}/contents/{quote(p)}?ref={quote(ref, safe='')}",
                "git_url": f"{api}/git/{git_kind}/{entry.sha}" if git_kind else None,
                "html_url": self.html(repo, "blob" if kind == "file" else "tree", ref, p),
                "download_url": f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{p}"
                if kind == "file"
                else None,
            }
            data["_links"] = {"self": data["url"], "git": data["git_url"], "html": data["html_url"]}
            return data

        if path and path not in entries:
            raise _not_found()
        if not path or entries[path].type == "tree":
            children = [describe(p, e) for p, e in entries.items() if p.rpartition("/")[0] == path and p != path]
            return _json_response(200, children)
        entry = entries[path]
        if entry.type != "blob":
            return _json_response(200, describe(path, entry))
        data = repo.objects[entry.sha].data  # type: ignore[union-attr]
        accept = self.request.headers.get("accept", "")
        if re.search(r"application/vnd\.github(\.v3)?\.raw", accept):
            return Response(200, data, {"Content-Type": "application/vnd.github.raw; charset=utf-8"})
        inline = len(data) <= CONTENTS_INLINE_LIMIT
        return _json_response(
            200,
            {
                **describe(path, entry),
                "content": _wrapped_b64(data) if inline else "",
                "encoding": "base64" if inline else "none",
            },
        )

    # -- pull requests -----------------------------------------------------------------------------

    def find_pull(self, repo: _Repo, number: str) -> PullRequest:
        pr = repo.pulls.get(int(number)) if number.isdigit() else None
        if pr is None:
            raise _not_found()
        return pr

    def pulls_route(self, repo: _Repo, method: str, rest: list[str]) -> Response:
        if not rest:
            if method == "GET":
                return self.list_pulls(repo)
            if method == "POST":
                return self.create_pull(repo)
            raise _not_found()
        pr = self.find_pull(repo, rest[0])
        if len(rest) == 1 and method == "GET":
            return _json_response(200, self.pull_json(repo, pr))
        if len(rest) == 1 and method == "PATCH":
            return self.update_pull(repo, pr)
        if rest[1:] == ["files"] and method == "GET":
            base_sha = repo.refs.get(f"refs/heads/{pr.base}", pr.base_sha)
            files = self.changed_files(repo, repo.merge_base(base_sha, pr.head_sha), pr.head_sha)
            page, links = self.paginate(files)
            return _json_response(200, page, links)
        if rest[1:] == ["merge"] and method == "GET":
            if not pr.merged:
                raise _not_found()
            return Response(204)
        if rest[1:] == ["merge"] and method == "PUT":
            body = self.json_object()
            merge_method = self.get_field(body, "merge_method", str, required=False) or "merge"
            expected = self.get_field(body, "sha", str, required=False)
            if merge_method not in ("merge", "squash"):
                raise _ApiError(405, f"Merge method {merge_method} is not allowed on this repository")
            if expected is not None and expected.lower() != pr.head_sha:
                raise _ApiError(409, "Head branch was modified. Review and try the merge again.")
            try:
                sha = self.gh._merge(
                    repo,
                    pr,
                    merge_method,
                    self.get_field(body, "commit_title", str, required=False),
                    self.get_field(body, "commit_message", str, required=False),
                )
            except ValueError:
                raise _ApiError(405, "Pull Request is not mergeable") from None
            return _json_response(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})
        raise _not_found()

    def list_pulls(self, repo: _Repo) -> Response:
        q = self.request
        state = q.param("state") or "open"
        pulls = [pr for pr in repo.pulls.values() if state == "all" or pr.state == state]
        head = q.param("head")
        if head and ":" in head:  # GitHub ignores a head filter without the "owner:" prefix
            owner, _, branch = head.partition(":")
            pulls = [pr for pr in pulls if owner.lower() == repo.owner.lower() and pr.head == branch]
        if base := q.param("base"):
            pulls = [pr for pr in pulls if pr.base == base]
        sort = q.param("sort") or "created"
        direction = q.param("direction") or ("desc" if sort == "created" else "asc")
        key = {"updated": lambda pr: (pr.updated_at, pr.number)}.get(sort, lambda pr: (pr.created_at, pr.number))
        pulls.sort(key=key, reverse=direction == "desc")
        page, links = self.paginate(pulls)
        return _json_response(200, [self.pull_json(repo, pr, full=False) for pr in page], links)

    def text_field(self, body: Mapping[str, Any], name: str, limit: int, *, required: bool = False) -> str | None:
        value = self.get_field(body, name, str, required=required)
        if value is not None and len(value) > limit:
            raise _validation_failed(
                "Issue", "custom", field=name, message=f"{name} is too long (maximum is {limit} characters)"
            )
        return value

    def create_pull(self, repo: _Repo) -> Response:
        body = self.json_object()
        title = self.text_field(body, "title", MAX_TITLE_CHARS, required=True)
        head = self.get_field(body, "head", str)
        base = self.get_field(body, "base", str)
        text = self.text_field(body, "body", MAX_BODY_CHARS)
        draft = self.get_field(body, "draft", bool, required=False) or False
        owner, _, branch = head.rpartition(":")
        head_sha = repo.refs.get(f"refs/heads/{branch}")
        if (owner and owner.lower() != repo.owner.lower()) or head_sha is None:
            raise _validation_failed("PullRequest", "invalid", field="head")
        base_sha = repo.refs.get(f"refs/heads/{base}")
        if base_sha is None:
            raise _validation_failed("PullRequest", "invalid", field="base")
        if any(pr.state == "open" and (pr.head, pr.base) == (branch, base) for pr in repo.pulls.values()):
            raise _validation_failed(
                "PullRequest", "custom", message=f"A pull request already exists for {repo.owner}:{branch}."
            )
        if repo.is_ancestor(head_sha, base_sha):
            raise _validation_failed("PullRequest", "custom", message=f"No commits between {base} and {branch}")
        assert title is not None
        when = self.gh._tick()
        number = repo.next_number
        repo.next_number += 1
        pr = PullRequest(
            number,
            next(self.gh._ids),
            next(self.gh._ids),
            title,
            text,
            branch,
            base,
            head_sha,
            base_sha,
            self.login,
            draft=draft,
            created_at=when,
            updated_at=when,
        )
        repo.pulls[number] = pr
        payload = self.pull_json(repo, pr)
        return _json_response(201, payload, {"Location": payload["url"]})

    def update_pull(self, repo: _Repo, pr: PullRequest) -> Response:
        body = self.json_object()
        title = self.text_field(body, "title", MAX_TITLE_CHARS)
        text = self.text_field(body, "body", MAX_BODY_CHARS) if "body" in body else pr.body
        base = self.get_field(body, "base", str, required=False)
        state = self.check_state(repo, body, pr)
        if base is not None and f"refs/heads/{base}" not in repo.refs:
            raise _validation_failed("PullRequest", "invalid", field="base")
        self.apply_issue_edit(repo, pr, title, text, state)
        if base is not None:
            pr.base, pr.base_sha = base, repo.refs[f"refs/heads/{base}"]
        return _json_response(200, self.pull_json(repo, pr))

    def check_state(self, repo: _Repo, body: Mapping[str, Any], pr: PullRequest) -> str | None:
        state = self.get_field(body, "state", str, required=False)
        if state is not None and state not in ("open", "closed"):
            raise _validation_failed("Issue", "invalid", field="state")
        if state == "open" and pr.state == "closed":
            if pr.merged:
                raise _validation_failed("PullRequest", "custom", message="Cannot reopen a merged pull request")
            if f"refs/heads/{pr.head}" not in repo.refs:
                raise _validation_failed("PullRequest", "custom", message="The head branch has been deleted")
            if any(o.state == "open" and (o.head, o.base) == (pr.head, pr.base) for o in repo.pulls.values()):
                raise _validation_failed(
                    "PullRequest", "custom", message=f"A pull request already exists for {repo.owner}:{pr.head}."
                )
        return state

    def apply_issue_edit(
        self, repo: _Repo, pr: PullRequest, title: str | None, body: str | None, state: str | None
    ) -> None:
        pr.updated_at = self.gh._tick()
        if title is not None:
            pr.title = title
        pr.body = body
        if state == "closed" and pr.state == "open":
            pr.state, pr.closed_at = "closed", pr.updated_at
        elif state == "open" and pr.state == "closed":
            pr.state, pr.closed_at, pr.head_sha = "open", None, repo.refs[f"refs/heads/{pr.head}"]

    def changed_files(self, repo: _Repo, base: str | None, head: str) -> list[dict[str, Any]]:
        old = repo.commit_flat(base) if base else {}
        new = repo.commit_flat(head)
        files = []
        for path in sorted({*old, *new}):
            before, after = old.get(path), new.get(path)
            if before == after:
                continue
            status = "added" if before is None else "removed" if after is None else "modified"
            sha = (after or before)[1]  # type: ignore[index]
            entry: dict[str, Any] = {
                "sha": sha,
                "filename": path,
                "status": status,
                "additions": 0,
                "deletions": 0,
                "changes": 0,
                "blob_url": self.html(repo, "blob", head, path),
                "raw_url": self.html(repo, "raw", head, path),
                "contents_url": f"{self.repo_api(repo)}/contents/{quote(path)}?ref={head}",
            }
            texts = [_text_lines(repo, side) for side in (before, after)]
            if texts[0] is not None and texts[1] is not None:
                diff = list(difflib.unified_diff(texts[0], texts[1], lineterm="", n=3))[2:]
                entry["additions"] = sum(line.startswith("+") for line in diff)
                entry["deletions"] = sum(line.startswith("-") for line in diff)
                entry["changes"] = entry["additions"] + entry["deletions"]
                if diff:
                    entry["patch"] = "\n".join(diff)
            files.append(entry)
        return files

    # -- issues, labels, comments ------------------------------------------------------------------

    def issues_route(self, repo: _Repo, method: str, rest: list[str]) -> Response:
        if len(rest) == 2 and rest[0] == "comments":
            comment = repo.comments.get(int(rest[1])) if rest[1].isdigit() else None
            if comment is None:
                raise _not_found()
            if method == "GET":
                return _json_response(200, self.comment_json(repo, comment))
            if method == "PATCH":
                text = self.comment_body()
                comment.body, comment.updated_at = text, self.gh._tick()
                return _json_response(200, self.comment_json(repo, comment))
            if method == "DELETE":
                del repo.comments[comment.id]
                return Response(204)
            raise _not_found()
        if not rest:
            raise _not_found()
        pr = self.find_pull(repo, rest[0])
        if len(rest) == 1 and method == "GET":
            return _json_response(200, self.issue_json(repo, pr))
        if len(rest) == 1 and method == "PATCH":
            body = self.json_object()
            title = self.text_field(body, "title", MAX_TITLE_CHARS)
            text = self.text_field(body, "body", MAX_BODY_CHARS) if "body" in body else pr.body
            state = self.check_state(repo, body, pr)
            labels = self.label_names(body) if "labels" in body else None
            self.apply_issue_edit(repo, pr, title, text, state)
            if labels is not None:
                pr.labels = self.ensure_labels(repo, labels)
            return _json_response(200, self.issue_json(repo, pr))
        if rest[1:2] == ["labels"]:
            return self.labels_route(repo, pr, method, rest[2:])
        if rest[1:] == ["comments"]:
            if method == "GET":
                comments = [c for c in repo.comments.values() if c.number == pr.number]
                page, links = self.paginate(comments)
                return _json_response(200, [self.comment_json(repo, c) for c in page], links)
            if method == "POST":
                text = self.comment_body()
                when = self.gh._tick()
                comment = Comment(next(self.gh._ids), pr.number, text, self.login, when, when)
                repo.comments[comment.id] = comment
                pr.updated_at = when
                payload = self.comment_json(repo, comment)
                return _json_response(201, payload, {"Location": payload["url"]})
        raise _not_found()

    def comment_body(self) -> str:
        body = self.json_object()
        text = self.get_field(body, "body", str)
        if not text.strip():
            raise _validation_failed("IssueComment", "missing_field", field="body")
        if len(text) > MAX_BODY_CHARS:
            raise _validation_failed(
                "IssueComment",
                "custom",
                field="body",
                message=f"Body is too long (maximum is {MAX_BODY_CHARS} characters)",
            )
        return text

    def label_names(self, body: Any) -> list[str]:
        """`{"labels": [...]}` or a bare list; items are names or {"name": ...}."""
        items = body.get("labels") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise _ApiError(422, 'Invalid request.\n\n"labels" wasn\'t supplied.')
        names = []
        for item in items:
            name = item.get("name") if isinstance(item, dict) else item
            if not isinstance(name, str) or not name.strip():
                raise _validation_failed("Label", "invalid", field="name")
            if len(name) > 50:
                raise _validation_failed(
                    "Label", "custom", field="name", message="name is too long (maximum is 50 characters)"
                )
            names.append(name.strip())
        return names

    def ensure_labels(self, repo: _Repo, names: Iterable[str]) -> list[str]:
        """Repo label names for `names` (creating missing labels), deduplicated, in alphabetical order."""
        result = {}
        for name in names:
            label = repo.labels.get(name.lower())
            if label is None:
                label = repo.labels[name.lower()] = Label(next(self.gh._ids), name)
            result[label.name.lower()] = label.name
        return [result[k] for k in sorted(result)]

    def labels_route(self, repo: _Repo, pr: PullRequest, method: str, rest: list[str]) -> Response:
        if rest:
            if method != "DELETE" or len(rest) != 1:
                raise _not_found()
            if rest[0].lower() not in {name.lower() for name in pr.labels}:
                raise _ApiError(404, "Label does not exist")
            pr.labels = [name for name in pr.labels if name.lower() != rest[0].lower()]
            pr.updated_at = self.gh._tick()
        elif method == "POST":
            pr.labels = self.ensure_labels(repo, [*pr.labels, *self.label_names(self.json_body())])
            pr.updated_at = self.gh._tick()
        elif method == "PUT":
            pr.labels = self.ensure_labels(repo, self.label_names(self.json_body()))
            pr.updated_at = self.gh._tick()
        elif method == "DELETE":
            pr.labels = []
            pr.updated_at = self.gh._tick()
            return Response(204)
        elif method != "GET":
            raise _not_found()
        labels = self.pr_labels(repo, pr)
        if method == "GET":
            page, links = self.paginate(labels)
            return _json_response(200, page, links)
        return _json_response(200, labels)

    def create_label(self, repo: _Repo) -> Response:
        body = self.json_object()
        name = self.get_field(body, "name", str)
        color = (self.get_field(body, "color", str, required=False) or "ededed").removeprefix("#")
        description = self.get_field(body, "description", str, required=False)
        if name.lower() in repo.labels:
            raise _validation_failed("Label", "already_exists", field="name")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            raise _validation_failed("Label", "invalid", field="color")
        label = repo.labels[name.lower()] = Label(next(self.gh._ids), name, color.lower(), description)
        payload = self.label_json(repo, label)
        return _json_response(201, payload, {"Location": payload["url"]})

    # -- statuses ----------------------------------------------------------------------------------

    def create_status(self, repo: _Repo, sha: str) -> Response:
        body = self.json_object()
        state = self.get_field(body, "state", str)
        target_url = self.get_field(body, "target_url", str, required=False)
        description = self.get_field(body, "description", str, required=False)
        context = self.get_field(body, "context", str, required=False) or "default"
        sha = sha.lower()
        if repo.get(sha, Commit) is None:
            raise _ApiError(422, f"No commit found for SHA: {sha}")
        if state not in STATUS_STATES:
            raise _validation_failed("Status", "custom", field="state", message="State is not included in the list")
        if description is not None and len(description) > MAX_STATUS_DESCRIPTION:
            raise _validation_failed(
                "Status",
                "custom",
                field="description",
                message=f"description is too long (maximum is {MAX_STATUS_DESCRIPTION} characters)",
            )
        existing = repo.statuses.setdefault(sha, [])
        if sum(s.context == context for s in existing) >= MAX_STATUSES_PER_CONTEXT:
            raise _validation_failed(
                "Status", "custom", message="This SHA and context has reached the maximum number of statuses."
            )
        status = Status(next(self.gh._ids), sha, state, context, description, target_url, self.login, self.gh._tick())
        existing.append(status)
        payload = self.status_json(repo, status)
        return _json_response(201, payload, {"Location": payload["url"]})

    def list_statuses(self, repo: _Repo, sha: str) -> Response:
        statuses = list(reversed(repo.statuses.get(sha, [])))
        page, links = self.paginate(statuses)
        return _json_response(200, [self.status_json(repo, s) for s in page], links)

    def combined_status(self, repo: _Repo, sha: str) -> Response:
        latest: dict[str, Status] = {}
        for status in repo.statuses.get(sha, []):
            latest[status.context] = status
        states = {s.state for s in latest.values()}
        if states & {"error", "failure"}:
            combined = "failure"
        elif not states or "pending" in states:
            combined = "pending"
        else:
            combined = "success"
        newest_first = sorted(latest.values(), key=lambda s: s.id, reverse=True)
        page, links = self.paginate(newest_first, default=100)
        api = self.repo_api(repo)
        return _json_response(
            200,
            {
                "state": combined,
                "statuses": [self.status_json(repo, s) for s in page],
                "sha": sha,
                "total_count": len(latest),
                "repository": self.repo_json(repo),
                "commit_url": f"{api}/commits/{sha}",
                "url": f"{api}/commits/{sha}/status",
            },
            links,
        )


def _text_lines(repo: _Repo, side: tuple[str, str] | None) -> list[str] | None:
    """The lines of a blob for a diff; [] for a missing side, None for binary content or a gitlink."""
    if side is None:
        return []
    blob = repo.get(side[1], Blob)
    if blob is None or b"\0" in blob.data:
        return None
    try:
        return blob.data.decode().splitlines()
    except UnicodeDecodeError:
        return None


def _wrapped_b64(data: bytes) -> str:
    """Base64 wrapped at 60 columns with a final newline, as GitHub sends blob and file contents."""
    encoded = base64.b64encode(data).decode()
    return "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))


def _valid_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and all(p not in ("", ".", "..", ".git") and "\0" not in p for p in parts)


def _valid_ref(ref: str) -> bool:
    """The parts of git's check-ref-format that matter here."""
    if ref.endswith(("/", ".", ".lock")) or ".." in ref or "//" in ref or "@{" in ref:
        return False
    return not any(c in ref for c in " ~^:?*[\\\x7f") and all(ord(c) >= 32 for c in ref)


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


class _Server(LoopbackServer):
    def __init__(self, gh: FakeGitHub) -> None:
        self.gh = gh
        self.connection_ids = itertools.count(1)
        super().__init__(_Handler)


class _Handler(LoopbackHandler):
    server: _Server
    connection_id = 0

    def setup(self) -> None:
        super().setup()
        self.connection_id = next(self.server.connection_ids)

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        request = self.read_request(arrived=time.monotonic(), connection=self.connection_id)
        response, drop = self.server.gh._handle(request)
        if drop:
            self.close_connection = True
        else:
            self.send(response)
