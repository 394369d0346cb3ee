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
from dataclasses import dataclass
from pathlib import Path

from .. import hub, yamlio
from ..errors import Failure
from ..ids import MODEL_ID, is_model_id
from ..records import from_dict
from .config import Config
from .discover import indexed_record
from .eligibility import Candidate, Ineligible, check_model

REQUEST_SCHEMA = {
    "type": "object",
    "required": ["model"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "pattern": MODEL_ID},
        "revision": {"type": "string", "pattern": "^[\\w./-]{1,200}$"},
        "requested_by": {"type": "string", "maxLength": 100},
        "reason": {"type": "string", "maxLength": 2000},
    },
}
MAX_REQUEST_BYTES = 16_384


@dataclass(frozen=True)
class AuditRequest:
    model: str
    revision: str | None = None
    requested_by: str | None = None
    reason: str | None = None


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
    import jsonschema_rs

    try:
        raw = read_regular_file(path, MAX_REQUEST_BYTES)
        data = yamlio.load(raw.decode("utf-8"), str(path))
    except (yamlio.YamlError, UnicodeDecodeError, OSError, ValueError) as e:
        message = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
        raise Ineligible(Failure.INVALID_REQUEST, message) from e
    errors = list(jsonschema_rs.validator_for(REQUEST_SCHEMA).iter_errors(data))
    if errors:
        e = errors[0]
        where = ".".join(map(str, e.instance_path)) or "request"
        if type(e.kind).__name__ == "Pattern" and where == "model":
            message = f"model {e.instance!r} is not a Hub model id (org/name)"
        else:
            message = f"{where}: {e.message[:200]}"
        expected = "Expected: model, and optionally revision, requested_by, reason"
        raise Ineligible(Failure.INVALID_REQUEST, f"{path}: {message}. {expected}")
    if not is_model_id(data["model"]):  # the Hub's own rules: no "--" or "..", no ".git" at the end
        raise Ineligible(Failure.INVALID_REQUEST, f"{path}: model {data['model']!r} is not a valid Hub model id")
    return from_dict(AuditRequest, data)


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
