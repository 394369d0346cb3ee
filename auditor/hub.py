"""The Hugging Face Hub: every call the auditor makes to it, retried the same way, its errors mapped once.

The rest of the code asks this module for model infos, listings, files and snapshots and never sees HTTP.
huggingface_hub (imported here, lazily: the base install reads the index without it) honours HF_ENDPOINT,
HF_HUB_OFFLINE and HF_TOKEN. Network failures are recognised by type: the builtin connection and timeout
errors, and the transport errors of whichever HTTP library this huggingface_hub runs on.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .errors import (
    AuditorError,
    GatedModelError,
    HubError,
    ModelNotFoundError,
    first_line,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_ATTEMPTS = 4
RETRY_BACKOFF_S = 1.0


@functools.cache
def network_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the network failed", not "the Hub said no"."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    import requests

    types += [requests.ConnectionError, requests.Timeout]
    for name in ("httpx", "httpx2"):  # huggingface_hub 1.x runs on httpx (packaged as httpx2 by some)
        try:
            module = __import__(name)
        except ImportError:
            continue
        types.append(module.TransportError)
    return tuple(types)


def is_network_error(e: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(e, network_errors()) and not isinstance(e, OfflineModeIsEnabled)  # offline: no retry helps


def with_retries(call: Callable[[], T], *, what: str) -> T:
    """Run a Hub call, retrying network errors and 5xx/429 answers with exponential backoff; offline
    (HF_HUB_OFFLINE) never: what failed would fail again, and the user would wait for nothing.

    huggingface_hub itself retries neither `model_info` nor a 5xx on a file download; an interrupted
    download is resumed from its `.incomplete` file on the next attempt.
    """
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return call()
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", None)
            if status is None or not (status >= 500 or status == 429) or attempt == RETRY_ATTEMPTS or offline():
                raise
            log.warning("%s: HTTP %s, retrying (%d/%d)", what, status, attempt, RETRY_ATTEMPTS)
        except Exception as e:
            if not is_network_error(e) or attempt == RETRY_ATTEMPTS or offline():
                raise
            log.warning("%s: %s, retrying (%d/%d)", what, type(e).__name__, attempt, RETRY_ATTEMPTS)
        time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def client(api: Any = None) -> Any:
    """The `HfApi` to use: the one given (tests pass their own), else a fresh one."""
    from huggingface_hub import HfApi

    return api or HfApi()


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Within: huggingface_hub's exceptions raised as the auditor's (`hub_error`), the others as they are."""
    try:
        yield
    except Exception as e:
        mapped = hub_error(e, repo_id, revision)
        if mapped is e:
            raise
        raise mapped from e


def model_info(repo_id: str, *, revision: str | None = None, files_metadata: bool = False, api: Any = None) -> Any:
    """The repo's info at `revision`, retried; huggingface_hub's errors as the auditor's."""
    with hub_errors(repo_id, revision):
        return with_retries(
            lambda: client(api).model_info(repo_id, revision=revision, files_metadata=files_metadata), what=repo_id
        )


def list_models(*, api: Any = None, **query: Any) -> Iterator[Any]:
    """A lazy listing (huggingface_hub follows the pages as it is read, with its own retries); a page that
    cannot be fetched is a HubError."""
    with hub_errors("the model listing", None):
        yield from client(api).list_models(**query)


def download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    repo_type: str | None = None,
) -> Path:
    """One file, into the huggingface_hub cache (resumed after an interruption); offline, from that cache.

    Raises:
        HubError: offline, and the file is not in the cache (huggingface_hub's own message asks to check
        the connection).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            with_retries(
                lambda: hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, repo_type=repo_type),
                what=f"{repo_id}/{filename}",
            )
        )
    except LocalEntryNotFoundError as e:
        if not offline():
            raise
        at = f" at {revision}" if revision else ""
        raise HubError(f"{repo_id}/{filename}{at}: not in the Hub cache, and HF_HUB_OFFLINE is set") from e


def snapshot(
    repo_id: str,
    *,
    revision: str | None,
    allow_patterns: list[str] | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> Path:
    """The files named by `allow_patterns` at `revision`, as a snapshot folder of the cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    def call() -> str:
        return snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=allow_patterns,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )

    if not local_files_only:
        return Path(with_retries(call, what=repo_id))
    try:
        return Path(call())
    except LocalEntryNotFoundError as e:
        at = f" at {revision}" if revision else ""
        raise HubError(f"{repo_id}{at}: no such local path, and not in the Hub cache (HF_HUB_OFFLINE is set)") from e


def hub_error(e: Exception, repo_id: str, revision: str | None) -> Exception:
    """huggingface_hub's exceptions as the auditor's, with a message that says what to do (the auditor's own
    errors pass through)."""
    from huggingface_hub import errors as hf

    if isinstance(e, AuditorError):
        return e
    if isinstance(e, hf.HFValidationError):
        return ModelNotFoundError(f"{repo_id!r} is not a valid Hub model id: {first_line(e)}")
    if isinstance(e, hf.GatedRepoError):
        return GatedModelError(f"{repo_id} is gated: accept its license on the Hub and set HF_TOKEN")
    if isinstance(e, hf.RevisionNotFoundError):
        return ModelNotFoundError(f"{repo_id} has no revision {revision!r}")
    if isinstance(e, hf.RepositoryNotFoundError):
        return ModelNotFoundError(f"{repo_id}: no such local path, and no such model on the Hub (or it is private)")
    if isinstance(e, hf.OfflineModeIsEnabled):
        return HubError(f"{repo_id}: not a local path, and HF_HUB_OFFLINE is set")
    if isinstance(e, hf.HfHubHTTPError) or is_network_error(e) or isinstance(e, hf.LocalEntryNotFoundError):
        return HubError(f"could not fetch {repo_id} from the Hub: {first_line(e, 300)}")
    return e


class RemoteFile:
    """A file of a Hub repo, read by HTTP range requests (`auditor.ranges.RangeReader`): only the bytes asked
    for cross the network, never the file. Its size and commit come from one HEAD request (huggingface_hub's
    `get_hf_file_metadata`, which follows the Hub's redirects); each read is one GET with `Range`, retried as
    every Hub call is. A server that answers a range with the whole file is refused, not read."""

    def __init__(self, repo_id: str, filename: str, *, revision: str | None = None):
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        self.name = f"{repo_id}/{filename}"
        self.repo_id, self.asked = repo_id, revision
        self.url = hf_hub_url(repo_id, filename, revision=revision)
        with hub_errors(repo_id, revision):
            meta = with_retries(lambda: get_hf_file_metadata(self.url), what=self.name)
        if meta.size is None or not meta.commit_hash:
            raise HubError(f"{self.name}: the Hub gave no {'size' if meta.size is None else 'commit'} for it")
        self.size, self.revision = int(meta.size), meta.commit_hash
        # Every read from the commit the size came from, not from a branch that may move on in between.
        self.url = hf_hub_url(repo_id, filename, revision=self.revision)
        self.bytes_read = self.reads = 0

    def read(self, offset: int, length: int) -> bytes:
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        from .ranges import check_range

        check_range(self.name, self.size, offset, length)
        if length == 0:
            return b""
        headers = {**build_hf_headers(), "Range": f"bytes={offset}-{offset + length - 1}"}

        def get() -> bytes:
            with get_session().stream("GET", self.url, headers=headers, follow_redirects=True) as response:
                if response.status_code >= 400:
                    response.read()  # an error's body is small, and says what went wrong
                    hf_raise_for_status(response)
                if response.status_code != 206:  # the whole file would follow: not read
                    raise HubError(f"{self.name}: a range request was answered with HTTP {response.status_code}")
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > length:
                        break
                return bytes(data)

        with hub_errors(self.repo_id, self.asked):
            data = with_retries(get, what=self.name)
        if len(data) != length:
            raise HubError(f"{self.name}: {len(data):,} bytes came back for a range of {length:,} at {offset:,}")
        self.bytes_read += len(data)
        self.reads += 1
        return data
