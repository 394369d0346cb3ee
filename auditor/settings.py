"""Every knob of an audit and its default, in one place that imports nothing heavy.

The defaults are documented in the README and in `auditor.detect` / `auditor.ablation`; the scheduler's
config file (`auditor.yaml`) and the CLI options map onto `AuditSettings` field by field.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PROMPT = "Apple Inc. is a worldwide tech company."  # the paper's prompt
DEFAULT_MIN_OUTPUT_RATIO = 100.0
DEFAULT_MIN_INPUT_RATIO = 100.0
DEFAULT_MIN_SHARE = 0.5
DEFAULT_MAX_SUPER_WEIGHTS = 16
DEFAULT_SEQ_LEN = 2048
DEFAULT_MAX_TOKENS = 65536
DEFAULT_MIN_DAMAGE = 2.0
DEFAULT_MIN_MARGIN = 2.0


@dataclass(frozen=True)
class AuditSettings:
    """Every knob of an audit, with the documented defaults. Stored with each result."""

    device: str = "auto"
    dtype: str = "auto"
    prompt: str = DEFAULT_PROMPT
    min_output_ratio: float = DEFAULT_MIN_OUTPUT_RATIO
    min_input_ratio: float = DEFAULT_MIN_INPUT_RATIO
    min_share: float = DEFAULT_MIN_SHARE
    max_super_weights: int = DEFAULT_MAX_SUPER_WEIGHTS
    module_pattern: str | None = None
    eval_text: str | None = None
    """A local text file; None fetches WikiText-2 (test) from the Hub."""
    seq_len: int = DEFAULT_SEQ_LEN
    max_tokens: int = DEFAULT_MAX_TOKENS
    """Tokens scored per perplexity measurement; 0 scores the whole text."""
    min_damage: float = DEFAULT_MIN_DAMAGE
    min_margin: float = DEFAULT_MIN_MARGIN
