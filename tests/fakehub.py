"""A local stand-in for the Hugging Face Hub HTTP API, for tests.

`FakeHub` is a real HTTP/1.1 server on 127.0.0.1 (stdlib `ThreadingHTTPServer`, one daemon thread per
connection, keep-alive) that answers the requests `huggingface_hub` 2.4 and `transformers` 5 send to
huggingface.co, from repositories held in memory. It never opens a connection to anything.

    with FakeHub() as hub:
        sha = hub.add_model("org/tiny", {"config.json": b"{}", "model.safetensors": data})
        point_client_at(hub.url, monkeypatch)          # in-process clients
        env = {**os.environ, "HF_ENDPOINT": hub.url}   # subprocesses: set HF_ENDPOINT instead

Each test must also get its own HF_HOME and cache (set the `HF_HOME` env var and patch
`huggingface_hub.constants.HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN_PATH`, ... which are read once at
import), so that nothing comes from, or leaks into, ~/.cache/huggingface; `tests/test_fakehub.py`
has a fixture doing this.

Routes (all that huggingface_hub 2.4 uses for reading repos; paths are percent-decoded segment by
segment, as the client quotes revisions with `safe=""`):

- `GET /api/models`, `GET /api/datasets`: `list_models` / `list_datasets`.
- `GET /api/{models,datasets}/{repo_id}[/revision/{rev}]`: `model_info` / `dataset_info` / `repo_info`.
- `GET /api/{models,datasets}/{repo_id}/tree/{rev}[/{path}]`: `list_repo_tree` (and `snapshot_download`).
- `POST /api/{models,datasets}/{repo_id}/paths-info/{rev}`: `get_paths_info`.
- `GET /api/models/{repo_id}/safetensors-metadata/{index}`: `get_sharded_safetensors_metadata`.
- `HEAD|GET /[datasets/]{repo_id}/resolve/{rev}/{path}`: `hf_hub_download`, `file_exists`,
  `get_hf_file_metadata`, the Range reads of `get_safetensors_metadata`.

Files are served directly from `/resolve/` (no redirect to a CDN), and Xet is never advertised: no
`X-Xet-Hash` header and no `xetHash` in tree entries, which is what makes huggingface_hub (with
hf_xet installed) fall back to plain HTTP downloads.

What the client does on failures (huggingface_hub 2.4, read from its source, checked by the tests):

- Errors are mapped from the `X-Error-Code` header: `RepoNotFound` -> `RepositoryNotFoundError`,
  `RevisionNotFound` -> `RevisionNotFoundError`, `EntryNotFound` -> `RemoteEntryNotFoundError`,
  `GatedRepo` -> `GatedRepoError`; a disabled repo is recognised by the `X-Error-Message`
  "Access to this resource is disabled." -> `DisabledRepoError`. The fake hub answers like the Hub:
  unknown or private repo 401 (404 when a token is sent), unknown revision or file 404, gated file
  401 without a token and 403 with one, disabled repo 403.
- The HEAD of a download is not retried at first, but when it fails with 408/429/500/502/503/504, a
  connect error or a timeout and the file is not cached, it is made once more, with backoff on
  further failures (1 s, 2 s, 4 s, ..., up to 5 retries).
- The GET of a download is retried only on 408 and 429 (with backoff; after a `Retry-After: n` it
  waits n + 1 s): a 5xx on the file GET raises `HfHubHTTPError` at once; the caller has to retry.
- A connection that breaks while the body is streaming (`httpx2.RemoteProtocolError`,
  `ConnectError`, timeouts) is resumed within the same `hf_hub_download` call, after 1 s, with
  `Range: bytes=<received>-`. Bytes count as received only once a whole read chunk
  (`constants.DOWNLOAD_CHUNK_SIZE`, 10 MiB) has arrived, so a smaller file is fetched again whole.
- `model_info`, `paths-info` and the safetensors range reads are never retried; `list_models` and
  `list_repo_tree` pages are retried on 408/429/500/502/503/504 and network errors.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import itertools
import json
import math
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import parse_qs, urlencode

from huggingface_hub import RepoCard, constants, hf_api
from huggingface_hub.hf_api import ExpandDatasetProperty_T, ExpandModelProperty_T
from loopback import LoopbackHandler, LoopbackServer, Request, Response, Served, json_response

if TYPE_CHECKING:
    import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".parquet", ".pt")
"""Files stored in LFS (like the Hub's default .gitattributes, restricted to what tests use)."""

Gated = Literal[False, "auto", "manual"]
RepoType = Literal["model", "dataset"]
Files = Mapping[str, bytes] | str | Path

_DISABLED_MESSAGE = "Access to this resource is disabled."
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
_SORT_KEYS: dict[str, Callable[[Repo], Any]] = {
    "createdAt": lambda repo: repo.created_at,
    "lastModified": lambda repo: repo.head.date,
    "downloads": lambda repo: repo.downloads,
    "likes": lambda repo: repo.likes,
    "trendingScore": lambda repo: repo.trending_score,
}
_SORT_ALIASES = {
    "created_at": "createdAt",
    "last_modified": "lastModified",
    "trending_score": "trendingScore",
}
_EXPANDABLE = {
    "model": frozenset(get_args(ExpandModelProperty_T)),
    "dataset": frozenset(get_args(ExpandDatasetProperty_T)),
}
# What list_models / list_datasets answer per repo when neither `full`, `expand` nor `cardData` is asked.
_LIST_FIELDS = {
    "model": (
        "_id",
        "id",
        "likes",
        "trendingScore",
        "private",
        "downloads",
        "tags",
        "pipeline_tag",
        "library_name",
        "createdAt",
        "modelId",
    ),
    "dataset": (
        "_id",
        "id",
        "author",
        "sha",
        "lastModified",
        "private",
        "gated",
        "disabled",
        "likes",
        "trendingScore",
        "tags",
        "downloads",
        "createdAt",
    ),
}
_FULL_EXTRA_FIELDS = {
    "model": ("author", "sha", "lastModified", "gated", "disabled", "siblings"),
    "dataset": ("cardData", "siblings"),
}


# --------------------------------------------------------------------------------------------------
# Content model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """One file version. LFS files are addressed by the git oid of their pointer file, like on the Hub."""

    content: bytes
    is_lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @functools.cached_property  # once: a 100 MB file is served by ranges, a request at a time
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def lfs_pointer(self) -> bytes:
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
        return pointer.encode()

    @functools.cached_property
    def oid(self) -> str:
        """Git blob sha1 of what git stores: the content, or the LFS pointer."""
        stored = self.lfs_pointer if self.is_lfs else self.content
        return hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag: sha256 for LFS files, git blob sha1 otherwise."""
        return self.sha256 if self.is_lfs else self.oid


@dataclass(frozen=True)
class Commit:
    sha: str
    date: datetime
    message: str
    files: Mapping[str, Blob]
    """The whole tree at this commit: path in repo -> blob."""


@dataclass
class Repo:
    repo_type: RepoType
    repo_id: str
    private: bool
    gated: Gated
    disabled: bool
    card_data: dict[str, Any] | None
    pipeline_tag: str | None
    tags: list[str]
    library_name: str | None
    created_at: datetime
    downloads: int
    likes: int
    trending_score: int
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def resolve(self, revision: str) -> Commit | None:
        """`main` is the newest commit; any earlier commit stays reachable by its full sha."""
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.sha == revision.lower()), None)


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake hub saw it. `path` is percent-decoded; header names are lower-case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int


@dataclass
class _Fault:
    pattern: str
    method: str | None
    remaining: int
    status: int = 0
    retry_after: int | None = None
    drop_after_bytes: int | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and fnmatch.fnmatchcase(path, self.pattern)


def _blobs_from(files: Files) -> dict[str, Blob]:
    if isinstance(files, (str, Path)):
        root = Path(files)
        items = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    else:
        items = dict(files)
    return {path: Blob(data, is_lfs=path.endswith(LFS_SUFFIXES)) for path, data in items.items()}


def _as_datetime(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --------------------------------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------------------------------


class FakeHub(Served):
    """In-memory Hub served over HTTP on 127.0.0.1. See the module docstring for the routes.

    `page_size` caps every paginated answer (model/dataset lists and tree listings); the real Hub
    uses 1000, set it to 2 to see several pages with a handful of repos.
    """

    def __init__(self, *, page_size: int = 1000, bandwidth: float | None = None) -> None:
        self.page_size = page_size
        self.bandwidth = bandwidth
        """Bytes per second each file download is held to (None: as fast as loopback), for benchmarks."""
        self._lock = threading.RLock()
        self._repos: dict[tuple[RepoType, str], Repo] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._clock = _EPOCH

    # -- lifecycle ---------------------------------------------------------------------------------

    def make_server(self) -> _Server:
        return _Server(self)

    # -- content -----------------------------------------------------------------------------------

    def add_model(
        self,
        repo_id: str,
        files: Files,
        *,
        private: bool = False,
        gated: Gated = False,
        disabled: bool = False,
        card_data: dict[str, Any] | None = None,
        pipeline_tag: str | None = "text-generation",
        tags: Iterable[str] | None = None,
        library_name: str | None = "transformers",
        created_at: datetime | str | None = None,
        downloads: int = 0,
        likes: int = 0,
        trending_score: int = 0,
    ) -> str:
        """Create a model repo whose first commit holds `files` ({path: bytes}, or a local directory).

        `card_data` is what the Hub would parse from the README's YAML header; when None it is
        parsed from README.md, if any. Returns the commit sha.
        """
        return self._add_repo(
            "model",
            repo_id,
            files,
            created_at,
            private=private,
            gated=gated,
            disabled=disabled,
            card_data=card_data,
            pipeline_tag=pipeline_tag,
            tags=list(tags or ()),
            library_name=library_name,
            downloads=downloads,
            likes=likes,
            trending_score=trending_score,
        )

    def add_dataset(
        self,
        repo_id: str,
        files: Files,
        *,
        private: bool = False,
        gated: Gated = False,
        disabled: bool = False,
        card_data: dict[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        created_at: datetime | str | None = None,
        downloads: int = 0,
        likes: int = 0,
        trending_score: int = 0,
    ) -> str:
        """Create a dataset repo (served under /api/datasets/ and /datasets/). Returns the commit sha."""
        return self._add_repo(
            "dataset",
            repo_id,
            files,
            created_at,
            private=private,
            gated=gated,
            disabled=disabled,
            card_data=card_data,
            pipeline_tag=None,
            tags=list(tags or ()),
            library_name=None,
            downloads=downloads,
            likes=likes,
            trending_score=trending_score,
        )

    def add_commit(
        self,
        repo_id: str,
        files: Files,
        *,
        repo_type: RepoType = "model",
        delete: Iterable[str] = (),
        message: str = "Upload files",
        date: datetime | str | None = None,
    ) -> str:
        """Commit on `main` of an existing repo: `files` are added or replaced, `delete` removed;
        older commits stay reachable by sha. Returns the new commit sha (sha1 of the parent, the
        message and the tree)."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            tree = dict(repo.head.files)
            for path in delete:
                tree.pop(path)
            tree.update(_blobs_from(files))
            return self._commit(repo, tree, message, _as_datetime(date) if date else self._next_date(repo))

    def _add_repo(
        self,
        repo_type: RepoType,
        repo_id: str,
        files: Files,
        created_at: datetime | str | None,
        **settings: Any,
    ) -> str:
        blobs = _blobs_from(files)
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise ValueError(f"{repo_type} {repo_id!r} already exists")
            date = _as_datetime(created_at) if created_at is not None else self._next_date(None)
            repo = Repo(repo_type, repo_id, created_at=date, **settings)
            self._repos[(repo_type, repo_id)] = repo
            return self._commit(repo, blobs, "Initial commit", date)

    def _next_date(self, repo: Repo | None) -> datetime:
        """Commit dates come from a clock that advances one minute per commit, for reproducible sorts."""
        self._clock += timedelta(minutes=1)
        return max(self._clock, repo.head.date + timedelta(minutes=1)) if repo is not None else self._clock

    def _commit(self, repo: Repo, tree: dict[str, Blob], message: str, date: datetime) -> str:
        parent = repo.head.sha if repo.commits else ""
        listing = "".join(f"{path}\0{blob.oid}\n" for path, blob in sorted(tree.items()))
        seed = f"{repo.repo_type}/{repo.repo_id}\n{parent}\n{message}\n{listing}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits.append(Commit(sha, date, message, tree))
        return sha

    # -- faults and observation --------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(
        self,
        pattern: str,
        status: int = 500,
        times: int = 1,
        *,
        method: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer `status` (with a JSON error body, and `Retry-After` if given) to the next `times`
        requests whose decoded path matches the fnmatch `pattern` (and `method`, if given)."""
        with self._lock:
            self._faults.append(_Fault(pattern, method, times, status=status, retry_after=retry_after))

    def drop_next(self, pattern: str, after_bytes: int, times: int = 1) -> None:
        """For the next `times` GETs matching `pattern`: send the full headers (Content-Length
        included) and the first `after_bytes` bytes of the body, then close the connection, as a
        connection dropped mid-download (the client sees `httpx2.RemoteProtocolError`)."""
        with self._lock:
            self._faults.append(_Fault(pattern, "GET", times, drop_after_bytes=after_bytes))

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
            return None

    # -- request handling (called from the server threads) -----------------------------------------

    def _handle(self, request: Request) -> tuple[Response, int | None]:
        """Answer one request; the second value is the byte count after which to drop the connection."""
        fault = self._take_fault(request.method, request.path)
        drop_after = None
        if fault is not None and fault.drop_after_bytes is None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            response = json_response(fault.status, {"error": f"Injected HTTP {fault.status}"}, headers)
        else:
            drop_after = fault.drop_after_bytes if fault is not None else None
            try:
                with self._lock:
                    response = _Routes(self, request).dispatch()
            except _HubError as error:
                response = error.response()
            except Exception as error:  # a bug in the fake hub: show it to the test instead of hanging
                response = json_response(500, {"error": f"FakeHub internal error: {error!r}"})
        with self._lock:
            self._requests.append(
                RecordedRequest(request.method, request.path, request.query, request.headers, response.status)
            )
        return response, drop_after


# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------


class _HubError(Exception):
    """An error answered the way the Hub does: `X-Error-Code` / `X-Error-Message` and {"error": ...}."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code is not None:
            headers["X-Error-Code"] = self.code
        return json_response(self.status, {"error": self.message}, headers)


class _Routes:
    """Routing and payloads for one request. Runs with the hub lock held."""

    def __init__(self, hub: FakeHub, request: Request) -> None:
        self.hub = hub
        self.request = request

    def dispatch(self) -> Response:
        method, segs = self.request.method, self.request.segments
        if segs[:1] == ["api"] and len(segs) >= 2 and segs[1] in ("models", "datasets"):
            repo_type: RepoType = "model" if segs[1] == "models" else "dataset"
            if len(segs) == 2 and method == "GET":
                return self.list_repos(repo_type)
            if len(segs) > 2:
                return self.api_repo_route(repo_type, segs[2:])
        elif method in ("GET", "HEAD") and segs[:1] == ["datasets"] and "resolve" in segs[2:4]:
            return self.resolve("dataset", segs[1:])
        elif method in ("GET", "HEAD") and "resolve" in segs[1:3]:
            return self.resolve("model", segs)
        raise _HubError(404, "Not Found")

    # -- repo lookup -------------------------------------------------------------------------------

    def find_repo(self, repo_type: RepoType, segs: list[str]) -> tuple[Repo, list[str]]:
        """Split `segs` into a repo id (`namespace/name`, or a legacy single-segment id) and the rest;
        answer like the Hub for missing, private and disabled repos."""
        for n in (2, 1):
            if len(segs) >= n and (repo := self.hub._repos.get((repo_type, "/".join(segs[:n])))):
                break
        else:
            repo, n = None, 2
        if repo is None or repo.private:
            # The Hub answers 401 to anonymous requests (hiding whether the repo exists), 404 otherwise.
            status = 404 if self.request.authenticated else 401
            raise _HubError(status, "Repository not found", "RepoNotFound")
        if repo.disabled:
            raise _HubError(403, _DISABLED_MESSAGE)
        return repo, segs[n:]

    def commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def check_gate(self, repo: Repo) -> None:
        """Gated repos: metadata is public, file contents are not (no access list is modelled)."""
        if not repo.gated:
            return
        name = f"{repo.repo_type} {repo.repo_id}"
        if self.request.authenticated:
            raise _HubError(403, f"Access to {name} is restricted and you are not in the authorized list.", "GatedRepo")
        message = f"Access to {name} is restricted. You must have access to it and be authenticated to access it."
        raise _HubError(401, f"{message} Please log in.", "GatedRepo")

    # -- /api/{models,datasets}/{repo_id}/... --------------------------------------------------------

    def api_repo_route(self, repo_type: RepoType, segs: list[str]) -> Response:
        repo, rest = self.find_repo(repo_type, segs)
        method = self.request.method
        if not rest and method == "GET":
            return self.repo_info(repo, repo.head)
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            return self.repo_info(repo, self.commit_at(repo, rest[1]))
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            return self.tree(repo, self.commit_at(repo, rest[1]), "/".join(rest[2:]).strip("/"))
        if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
            return self.paths_info(repo, self.commit_at(repo, rest[1]))
        if len(rest) >= 2 and rest[0] == "safetensors-metadata" and repo_type == "model" and method == "GET":
            return self.safetensors_metadata(repo, "/".join(rest[1:]))
        raise _HubError(404, "Not Found")

    def repo_info(self, repo: Repo, commit: Commit) -> Response:
        """model_info / dataset_info. `blobs=true` adds size, blobId and lfs to siblings; `expand`
        restricts the answer to the listed properties."""
        expand = self.expand_param(repo.repo_type)
        info = _info(repo, commit, blobs=self.request.flag("blobs"))
        if expand:
            info = {key: value for key, value in info.items() if key in ("_id", "id", *expand)}
        return json_response(200, info)

    def expand_param(self, repo_type: RepoType) -> list[str]:
        expand = self.request.query.get("expand", []) + self.request.query.get("expand[]", [])
        unknown = sorted(set(expand) - _EXPANDABLE[repo_type])
        if unknown:
            raise _HubError(400, f"Invalid expand properties: {', '.join(unknown)}")
        return expand

    def list_repos(self, repo_type: RepoType) -> Response:
        """list_models / list_datasets: filters, descending sort, cursor pagination via a Link header."""
        q = self.request
        repos = [r for r in self.hub._repos.values() if r.repo_type == repo_type and not r.private and not r.disabled]
        if search := q.param("search"):
            repos = [r for r in repos if search.lower() in r.repo_id.lower()]
        if author := q.param("author"):
            repos = [r for r in repos if r.repo_id.partition("/")[0] == author]
        if pipeline_tag := q.param("pipeline_tag"):
            repos = [r for r in repos if r.pipeline_tag == pipeline_tag]
        if (gated := q.param("gated")) is not None:
            repos = [r for r in repos if bool(r.gated) == (gated.lower() == "true")]
        wanted_tags = q.query.get("filter", [])
        repos = [r for r in repos if set(wanted_tags) <= set(_tags(r, r.head))]
        if sort := q.param("sort"):
            sort_key = _SORT_KEYS.get(_SORT_ALIASES.get(sort, sort))
            if sort_key is None:
                raise _HubError(400, f"Invalid sort: {sort}")
            repos.sort(key=sort_key, reverse=True)

        expand = self.expand_param(repo_type)
        if expand:
            fields = ("_id", "id", *expand)
        else:
            fields = _LIST_FIELDS[repo_type]
            if q.flag("full"):
                fields += _FULL_EXTRA_FIELDS[repo_type]
            if q.flag("cardData"):
                fields += ("cardData",)
            if q.flag("config"):
                fields += ("config",)
        limit = int(q.param("limit") or 0)
        page, link = self.paginate(repos, min(limit, self.hub.page_size) if limit else self.hub.page_size)
        items = []
        for repo in page:
            info = _info(repo, repo.head, blobs=False)
            items.append({key: info[key] for key in fields if key in info})
        return json_response(200, items, link)

    def paginate(self, items: list[Any], page_size: int) -> tuple[list[Any], dict[str, str]]:
        """One page from the `cursor` query parameter, plus the `Link: <...>; rel="next"` header."""
        start = int(self.request.param("cursor") or 0)
        end = start + page_size
        if end >= len(items):
            return items[start:], {}
        query = [(k, v) for k, values in self.request.query.items() if k != "cursor" for v in values]
        next_url = f"{self.request.base_url}{self.request.raw_path}?{urlencode([*query, ('cursor', end)])}"
        return items[start:end], {"Link": f'<{next_url}>; rel="next"'}

    def tree(self, repo: Repo, commit: Commit, path: str) -> Response:
        """list_repo_tree: the entries under `path` (direct children, or all with `recursive=true`);
        `expand=true` adds lastCommit. Paginated like the list routes."""
        files, folders = commit.files, _folders(commit)
        if path and path not in folders:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
        prefix = f"{path}/" if path else ""
        paths = sorted(p for p in [*files, *folders] if p.startswith(prefix))
        if not self.request.flag("recursive"):
            paths = [p for p in paths if "/" not in p[len(prefix) :]]
        expand = self.request.flag("expand")
        page, link = self.paginate(paths, self.hub.page_size)
        return json_response(200, [_tree_entry(repo, commit, p, expand) for p in page], link)

    def paths_info(self, repo: Repo, commit: Commit) -> Response:
        """get_paths_info: form body `paths=...&paths=...&expand=...` (JSON accepted too); paths
        that do not exist are left out, like on the Hub."""
        body = self.request.body.decode()
        if self.request.headers.get("content-type", "").startswith("application/json"):
            payload = json.loads(body)
            paths, expand = list(payload.get("paths", [])), bool(payload.get("expand"))
        else:
            form = parse_qs(body, keep_blank_values=True)
            paths, expand = form.get("paths", []), (form.get("expand", [""])[-1].lower() in ("1", "true"))
        known = set(commit.files) | _folders(commit)
        entries = [_tree_entry(repo, commit, p.strip("/"), expand) for p in paths if p.strip("/") in known]
        return json_response(200, entries)

    def safetensors_metadata(self, repo: Repo, index_path: str) -> Response:
        """get_sharded_safetensors_metadata: the index (less weight_map) and every shard's header, on main."""
        self.check_gate(repo)
        files = repo.head.files
        if index_path not in files:
            raise _HubError(404, f"Entry not found: {index_path}", "EntryNotFound")
        index = json.loads(files[index_path].content)
        folder = index_path.rpartition("/")[0]
        shards = sorted(set(index.get("weight_map", {}).values()))
        headers = {
            shard: _safetensors_header(files[f"{folder}/{shard}" if folder else shard].content) for shard in shards
        }
        return json_response(200, {"index": {k: v for k, v in index.items() if k != "weight_map"}, "headers": headers})

    # -- /[datasets/]{repo_id}/resolve/{revision}/{path} --------------------------------------------

    def resolve(self, repo_type: RepoType, segs: list[str]) -> Response:
        """A file's bytes (GET) or headers (HEAD), with the headers hf_hub_download relies on:
        X-Repo-Commit, ETag, X-Linked-Etag / X-Linked-Size (LFS files), Content-Length, and Range
        support (206 + Content-Range, 416 when unsatisfiable)."""
        repo, rest = self.find_repo(repo_type, segs)
        if len(rest) < 3 or rest[0] != "resolve":
            raise _HubError(404, "Not Found")
        self.check_gate(repo)
        commit = self.commit_at(repo, rest[1])
        path = "/".join(rest[2:])
        blob = commit.files.get(path)
        if blob is None:
            raise _HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": _content_type(path),
        }
        if blob.is_lfs:
            headers |= {"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)}
        byte_range = _parse_range(self.request.headers.get("range"), blob.size)
        if self.hub.bandwidth and self.request.method == "GET":  # a slow network, for the benchmarks
            time.sleep(blob.size / self.hub.bandwidth)
        if byte_range is None:
            return Response(200, blob.content, headers)
        if byte_range == "unsatisfiable":
            return Response(416, b"", {**headers, "Content-Range": f"bytes */{blob.size}"})
        start, end = byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        return Response(206, blob.content[start : end + 1], headers)


# --------------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------------


def _info(repo: Repo, commit: Commit, *, blobs: bool) -> dict[str, Any]:
    """Every property the fake hub models for a repo at a commit (model_info's default answer)."""
    author = repo.repo_id.partition("/")[0] if "/" in repo.repo_id else None
    info: dict[str, Any] = {
        "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": author,
        "sha": commit.sha,
        "lastModified": _iso(commit.date),
        "createdAt": _iso(repo.created_at),
        "private": repo.private,
        "gated": repo.gated,
        "disabled": repo.disabled,
        "downloads": repo.downloads,
        "downloadsAllTime": repo.downloads,
        "likes": repo.likes,
        "trendingScore": repo.trending_score,
        "tags": _tags(repo, commit),
        "siblings": [_sibling(path, blob, blobs) for path, blob in sorted(commit.files.items())],
        "usedStorage": sum({b.oid: b.size for c in repo.commits for b in c.files.values()}.values()),
    }
    if (card_data := _card_data(repo, commit)) is not None:
        info["cardData"] = card_data
    if repo.repo_type == "model":
        info["modelId"] = repo.repo_id
        if repo.pipeline_tag is not None:
            info["pipeline_tag"] = repo.pipeline_tag
        if repo.library_name is not None:
            info["library_name"] = repo.library_name
        if (config := _config(commit)) is not None:
            info["config"] = config
        if (safetensors := _safetensors_summary(commit)) is not None:
            info["safetensors"] = safetensors
    return info


def _sibling(path: str, blob: Blob, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    sibling: dict[str, Any] = {"rfilename": path, "size": blob.size, "blobId": blob.oid}
    if blob.is_lfs:
        sibling["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": len(blob.lfs_pointer)}
    return sibling


def _card_data(repo: Repo, commit: Commit) -> dict[str, Any] | None:
    if repo.card_data is not None:
        return repo.card_data
    readme = commit.files.get("README.md")
    if readme is None:
        return None
    try:
        return RepoCard(readme.content.decode(), ignore_metadata_errors=True).data.to_dict() or None
    except Exception:  # YAML that does not parse, or is not a mapping: the Hub shows no card data
        return None


def _config(commit: Commit) -> dict[str, Any] | None:
    """The subset of config.json the Hub exposes in model info."""
    blob = commit.files.get("config.json")
    if blob is None:
        return None
    try:
        config = json.loads(blob.content)
    except ValueError:
        return None
    return {key: config[key] for key in ("architectures", "model_type", "auto_map") if key in config}


def _safetensors_header(content: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", content[:8])
    return json.loads(content[8 : 8 + length])


def _safetensors_summary(commit: Commit) -> dict[str, Any] | None:
    """Parameter counts per dtype over all *.safetensors files, from their headers."""
    parameters: dict[str, int] = {}
    shards = [blob for path, blob in commit.files.items() if path.endswith(".safetensors")]
    if not shards:
        return None
    for blob in shards:
        for name, tensor in _safetensors_header(blob.content).items():
            if name != "__metadata__":
                parameters[tensor["dtype"]] = parameters.get(tensor["dtype"], 0) + math.prod(tensor["shape"])
    return {"parameters": parameters, "total": sum(parameters.values())}


def _tags(repo: Repo, commit: Commit) -> list[str]:
    """Tags the way the Hub derives them: library, file formats, model type, task, card, license."""
    card = _card_data(repo, commit) or {}
    config = _config(commit) or {}
    card_tags = card.get("tags") or []
    derived = [
        repo.library_name,
        *(fmt for fmt in ("safetensors", "gguf") if any(p.endswith(f".{fmt}") for p in commit.files)),
        config.get("model_type"),
        repo.pipeline_tag,
        *repo.tags,
        *([card_tags] if isinstance(card_tags, str) else card_tags),
        f"license:{card['license']}" if card.get("license") else None,
        "region:us",
    ]
    return list(dict.fromkeys(tag for tag in derived if tag))


def _folders(commit: Commit) -> set[str]:
    return {path.rsplit("/", i)[0] for path in commit.files for i in range(1, path.count("/") + 1)}


def _tree_entry(repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
    blob = commit.files.get(path)
    if blob is None:
        children = sorted((p, b.oid) for p, b in commit.files.items() if p.startswith(f"{path}/"))
        entry: dict[str, Any] = {
            "type": "directory",
            "oid": hashlib.sha1(repr((path, children)).encode()).hexdigest(),
            "size": 0,
            "path": path,
        }
    else:
        entry = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
        if blob.is_lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.lfs_pointer)}
    if expand:
        last = _last_commit_touching(repo, commit, path)
        entry["lastCommit"] = {"id": last.sha, "title": last.message.splitlines()[0], "date": _iso(last.date)}
    return entry


def _last_commit_touching(repo: Repo, commit: Commit, path: str) -> Commit:
    """The newest commit, up to `commit`, that changed `path` (a file, or anything under a folder)."""

    def state(c: Commit) -> list[tuple[str, str]]:
        return sorted((p, b.oid) for p, b in c.files.items() if p == path or p.startswith(f"{path}/"))

    history = repo.commits[: repo.commits.index(commit) + 1]
    last = history[0]
    for previous, current in itertools.pairwise(history):
        if state(previous) != state(current):
            last = current
    return last


def _content_type(path: str) -> str:
    if path.endswith(".json"):
        return "application/json; charset=utf-8"
    if path.endswith((".md", ".txt", ".jinja", ".py")):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """`bytes=a-b`, `bytes=a-` or `bytes=-n` -> inclusive (start, end); None means serve it all."""
    if not header or not header.strip().lower().startswith("bytes=") or "," in header:
        return None
    first, _, last = header.strip()[6:].partition("-")
    try:
        if not first:
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    return "unsatisfiable" if start > end or start >= size else (start, end)


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


class _Server(LoopbackServer):
    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        super().__init__(_Handler)


class _Handler(LoopbackHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        self.send(*self.server.hub._handle(self.read_request()))


# --------------------------------------------------------------------------------------------------
# Pointing the clients at the fake hub
# --------------------------------------------------------------------------------------------------


def point_client_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make in-process huggingface_hub and transformers calls go to `url` instead of huggingface.co.

    huggingface_hub reads HF_ENDPOINT once, at import, into `constants.ENDPOINT` and
    `constants.HUGGINGFACE_CO_URL_TEMPLATE` (used by hf_hub_url / hf_hub_download); `HfApi()` copies
    `constants.ENDPOINT` when it is created, which for the module-level `huggingface_hub.model_info`,
    `list_models`, ... happened at import (`huggingface_hub.hf_api.api`), and transformers keeps a
    lazily created `HfApi` in `transformers.utils.hub._hf_api`. All of these are patched; the env var
    is set too, for code that reads it. (`huggingface_hub.utils._http._HUB_ORIGINS`, also computed at
    import, only matters for redirects, and the fake hub never redirects.) Subprocesses only need
    `HF_ENDPOINT=<url>` in their environment (plus HF_HOME, HF_HUB_DISABLE_TELEMETRY=1, and no
    HF_HUB_OFFLINE=1).

    Telemetry is disabled (with it on, building the user agent fetches `/api/agent-harnesses`) and
    offline mode is switched off. Callers must still give the test its own HF_HOME / HF_HUB_CACHE.
    """
    url = url.rstrip("/")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None:
        # Recreated on first use, from the patched constants.ENDPOINT (also when transformers is
        # imported only later in the test: it then starts with `_hf_api = None`).
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
