"""Every error the auditor raises on purpose.

Each one is a problem the user can act on, so the CLI prints its message as one line and exits non-zero.
`code` is a stable reason code: the scheduler stores it with failed and skipped audits, and the site shows it.
"""

from __future__ import annotations


class AuditorError(Exception):
    """Base class: a clear, one-line problem with the input or the environment."""

    code = "error"


class ModelNotFoundError(AuditorError):
    """MODEL is neither a local path nor a model the Hub knows (or the revision does not exist)."""

    code = "not_found"


class NotACheckpointError(AuditorError):
    """A local path exists but holds no transformers checkpoint (no config.json, no weights)."""

    code = "not_a_checkpoint"


class UnsafeCheckpointError(AuditorError):
    """Loading would run code from the checkpoint: pickle-only weights or `trust_remote_code`."""

    code = "unsafe"


class RemoteCodeError(UnsafeCheckpointError):
    """The config asks for code shipped with the model (`auto_map`), which the auditor never runs."""

    code = "remote_code"


class PickleOnlyError(UnsafeCheckpointError):
    """The weights exist only as pickle files (`*.bin`, `*.pt`, `*.pth`), which the auditor never loads."""

    code = "pickle_only"


class CorruptCheckpointError(AuditorError):
    """A weight file cannot be parsed (truncated, bad header, missing shard)."""

    code = "corrupt"


class UnsupportedModelError(AuditorError):
    """The model loads but is not a causal language model, or its MLP layout is unknown."""

    code = "unsupported_architecture"


class GatedModelError(AuditorError):
    """The Hub repository is gated: it needs an accepted license and a token."""

    code = "gated"


class HubError(AuditorError):
    """The Hub could not be reached or answered with an error while fetching files."""

    code = "download_error"


class EvalTextError(AuditorError):
    """The evaluation text is missing, empty or too short to measure perplexity."""

    code = "eval_text"


class OutOfMemoryError(AuditorError):
    """The model does not fit in the memory of the chosen device."""

    code = "out_of_memory"


class UsageError(AuditorError):
    """An option has a value the auditor cannot use."""

    code = "usage"


class NonFiniteError(AuditorError):
    """The unmodified model's perplexity is inf or NaN, so no ablation can be judged against it."""

    code = "non_finite"
