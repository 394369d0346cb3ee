"""Audit requests: small YAML files under `requests/`, added by pull request.

    model: mistralai/Mistral-7B-v0.3     # required: the Hub id
    revision: main                      # optional: a branch, tag or commit sha (default: main)
    requested_by: your-github-name      # optional
    reason: Checking the v0.3 tokenizer change did not move the super weight.   # optional

`check_request` says, with a message the requester can act on, whether the model can be audited, and pins
it to the commit sha the revision names at that moment.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated

from msgspec import Meta

from .. import hub, yamlio
from ..errors import Failure
from ..ids import is_model_id
from ..models import DataError, Model, ModelId, Text, from_data
from .config import Config
from .discover import indexed_record
from .eligibility import Candidate, Ineligible, check_model

MAX_REQUEST_BYTES = 16_384


class AuditRequest(Model):
    """requests/*.yaml: a pull request's ask for an audit."""

    model: ModelId
    revision: Annotated[str, Meta(pattern=r"^[\w./-]{1,200}$")] | None = None
    """A branch, tag or commit; the newest commit of the default branch when left out."""
    requested_by: Text(100) | None = None
    reason: Text(2000) | None = None


def request_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("."))


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file, never following a symbolic link: a request that links to a
    secret (or to /dev/zero) is refused, not read."""
    if path.is_symlink():
        raise ValueError("is a symbolic link; a request must be a plain file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("not a regular file")
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ValueError(f"over {limit:,} bytes; a request is a few lines")
    return raw


def read_request(path: Path) -> AuditRequest:
    """Parse one request file strictly.

    Raises:
        Ineligible: code `invalid_request`, saying what to fix.
    """
    try:
        raw = read_regular_file(path, MAX_REQUEST_BYTES)
        data = yamlio.load(raw.decode("utf-8"), str(path))
    except (yamlio.YamlError, UnicodeDecodeError, OSError, ValueError) as e:
        message = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
        raise Ineligible(Failure.INVALID_REQUEST, message) from e
    try:
        request = from_data(data, AuditRequest)
    except DataError as e:
        message = f"model {data['model']!r} is not a Hub model id (org/name)" if e.where == "model" else str(e)
        expected = "Expected: model, and optionally revision, requested_by, reason"
        raise Ineligible(Failure.INVALID_REQUEST, f"{path}: {message[:300]}. {expected}") from e
    if not is_model_id(request.model):  # the Hub's own rules: no "--" or "..", no ".git" at the end
        raise Ineligible(Failure.INVALID_REQUEST, f"{path}: model {request.model!r} is not a valid Hub model id")
    return request


def check_request(request: AuditRequest, config: Config, *, index_root: Path, api=None) -> Candidate:
    """Can this request be audited? Returns the candidate pinned to a commit sha.

    Raises:
        Ineligible: `not_found`, `download_error` (the Hub could not be asked), one of `eligibility`'s
        codes, or `already_audited`.
    """
    try:
        info = hub.model_info(request.model, revision=request.revision, api=api)
    except Exception as e:
        error = hub.hub_error(e, request.model, request.revision)
        code = Failure.NOT_FOUND if error.code == Failure.NOT_FOUND else Failure.DOWNLOAD_ERROR
        raise Ineligible(code, str(error)) from e
    candidate = check_model(info, config)
    if indexed_record(index_root, candidate.model, candidate.revision) is not None:  # that model's file only
        message = f"{candidate.model} is already in the index at {candidate.revision} (this tool version)"
        raise Ineligible(Failure.ALREADY_AUDITED, message, candidate.revision)
    return candidate
