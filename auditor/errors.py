"""Every error the auditor raises on purpose, and the one list of reason codes.

Each error is a problem the user can act on, so the CLI prints its message as one line and exits non-zero.
`code` is a stable reason code (a `Failure`): the scheduler stores it with failed and skipped audits, the run
summary counts it, and the site shows it.
"""

from __future__ import annotations

import errno
import os
from enum import Enum


class Failure(str, Enum):
    """Why a model was not audited, or why something failed: one code per fact, whoever finds it."""

    def __str__(self) -> str:  # the code itself, in messages, summaries, YAML and pages
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, code: str) -> Failure:
        """The code as a Failure; one this version does not know (from another process or an old file) is ERROR."""
        try:
            return cls(code)
        except ValueError:
            return cls.ERROR

    # the model, as the Hub lists it
    NOT_FOUND = "not_found"
    PRIVATE = "private"
    DISABLED = "disabled"
    GATED = "gated"
    LICENSE = "license"
    TOO_LARGE = "too_large"
    BAD_METADATA = "bad_metadata"
    ALREADY_AUDITED = "already_audited"
    INHERITED = "inherited"
    """A fine-tune whose screen found its base model's super weights unchanged: screened, not audited."""
    INVALID_REQUEST = "invalid_request"
    # the checkpoint itself
    NOT_A_CHECKPOINT = "not_a_checkpoint"
    NO_WEIGHTS = "no_weights"
    UNSAFE = "unsafe"
    REMOTE_CODE = "remote_code"
    PICKLE_ONLY = "pickle_only"
    QUANTIZED = "quantized"
    CORRUPT = "corrupt"
    UNSUPPORTED_ARCHITECTURE = "unsupported_architecture"
    # the audit
    EVAL_TEXT = "eval_text"
    NON_FINITE = "non_finite"
    OUT_OF_MEMORY = "out_of_memory"
    INVALID_RESULT = "invalid_result"
    # passing troubles, tried again (TRANSIENT)
    DOWNLOAD_ERROR = "download_error"
    CRASHED = "crashed"
    KILLED = "killed"
    TIMEOUT = "timeout"
    # the machine's own disk, put off until a later run (RESOURCE)
    NO_SPACE = "no_space"
    NOT_WRITABLE = "not_writable"
    # the tool's own inputs and state
    USAGE = "usage"
    SETTINGS = "settings"
    CONFIG = "config"
    BAD_YAML = "bad_yaml"
    QUEUE = "queue"
    MANIFEST = "manifest"
    CURSOR = "cursor"
    NO_INDEX = "no_index"
    INVALID_INDEX = "invalid_index"
    RUN_IN_PROGRESS = "run_in_progress"
    GITHUB = "github"
    ERROR = "error"


def debugging() -> bool:
    """SUPERWEIGHT_DEBUG is set: show every error's traceback and causes, not one line."""
    return bool(os.environ.get("SUPERWEIGHT_DEBUG"))


def first_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message as one line for ours: its first line (cut to `limit`), else its type's name."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


TRANSIENT = frozenset({Failure.DOWNLOAD_ERROR, Failure.CRASHED, Failure.KILLED})
"""The failures a later run tries again (up to `run.max_attempts`); a timeout would only time out again."""

RESOURCE = frozenset({Failure.NO_SPACE, Failure.NOT_WRITABLE})
"""The runner's disk, not the model: a later run tries again, and the attempt does not count."""

RESOURCE_ERRNOS = {
    errno.ENOSPC: Failure.NO_SPACE,
    errno.EDQUOT: Failure.NO_SPACE,
    errno.EFBIG: Failure.NO_SPACE,
    errno.EROFS: Failure.NOT_WRITABLE,
    errno.EACCES: Failure.NOT_WRITABLE,
    errno.EPERM: Failure.NOT_WRITABLE,
}


PERMISSION = frozenset({errno.EACCES, errno.EPERM})


def resource_error(e: BaseException | None) -> OSError | None:
    """The full or unwritable disk behind an error, if any: libraries wrap the OSError, so causes count too."""
    seen = set()
    while e is not None and id(e) not in seen:
        # a permission error without a file is the network's (a firewall refusing connect()), not the disk's
        if isinstance(e, OSError) and e.errno in RESOURCE_ERRNOS and (e.filename or e.errno not in PERMISSION):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def resource_message(e: OSError) -> str:
    """One line naming the path: `/srv/index/queue/queue.yaml: No space left on device`."""
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or first_line(e)}"


class AuditorError(Exception):
    """Base class: a clear, one-line problem with the input or the environment."""

    code = Failure.ERROR


class ModelNotFoundError(AuditorError):
    """MODEL is neither a local path nor a model the Hub knows (or the revision does not exist)."""

    code = Failure.NOT_FOUND


class NotACheckpointError(AuditorError):
    """A local path exists but holds no transformers checkpoint (no config.json, no weights)."""

    code = Failure.NOT_A_CHECKPOINT


class UnsafeCheckpointError(AuditorError):
    """Loading would run code from the checkpoint: pickle-only weights or `trust_remote_code`."""

    code = Failure.UNSAFE


class RemoteCodeError(UnsafeCheckpointError):
    """The config asks for code shipped with the model (`auto_map`), which the auditor never runs."""

    code = Failure.REMOTE_CODE


class PickleOnlyError(UnsafeCheckpointError):
    """The weights exist only as pickle files (`*.bin`, `*.pt`, `*.pth`), which the auditor never loads."""

    code = Failure.PICKLE_ONLY


class CorruptCheckpointError(AuditorError):
    """A weight file cannot be parsed (truncated, bad header, missing shard)."""

    code = Failure.CORRUPT


class UnsupportedModelError(AuditorError):
    """The model loads but is not a causal language model, or its MLP layout is unknown."""

    code = Failure.UNSUPPORTED_ARCHITECTURE


class QuantizedModelError(UnsupportedModelError):
    """The checkpoint is pre-quantized (GPTQ, AWQ, bitsandbytes, FP8...): its stored numbers are not the weights."""

    code = Failure.QUANTIZED


class GatedModelError(AuditorError):
    """The Hub repository is gated: it needs an accepted license and a token."""

    code = Failure.GATED


class HubError(AuditorError):
    """The Hub could not be reached or answered with an error while fetching files."""

    code = Failure.DOWNLOAD_ERROR


class EvalTextError(AuditorError):
    """The evaluation text is missing, empty or too short to measure perplexity."""

    code = Failure.EVAL_TEXT


class OutOfMemoryError(AuditorError):
    """The model does not fit in the memory of the chosen device."""

    code = Failure.OUT_OF_MEMORY


class UsageError(AuditorError):
    """An option has a value the auditor cannot use."""

    code = Failure.USAGE


class ResourceError(AuditorError):
    """The runner's disk is full or cannot be written: nothing was consumed, and a later run goes on."""

    def __init__(self, e: OSError, doing: str = ""):
        super().__init__(f"{resource_message(e)}{doing}")
        self.code = RESOURCE_ERRNOS[e.errno]
        self.errno = e.errno


class NonFiniteError(AuditorError):
    """The unmodified model's perplexity is inf or NaN, so no ablation can be judged against it."""

    code = Failure.NON_FINITE
