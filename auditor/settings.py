"""Every knob of an audit and its default, in one place that imports nothing heavy.

The defaults are documented in the README and in `auditor.detect` / `auditor.ablation`; the scheduler's
config file (`auditor.yaml`) and the CLI options map onto `AuditSettings` field by field.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import msgspec

from .errors import Failure, UsageError
from .models import Model

DEFAULT_PROMPT = "Apple Inc. is a worldwide tech company."  # the paper's prompt
DEFAULT_MIN_OUTPUT_RATIO = 100.0
DEFAULT_MIN_INPUT_RATIO = 20.0
"""A floor, not a filter: real super weights stand far above it (SmolLM2-135M's five candidates: 244x to
6,117x), and a weight that carries an output spike almost alone from a moderate input (50x) is offered too,
for the ablation to judge."""
DEFAULT_MIN_SHARE = 0.5
DEFAULT_MAX_SUPER_WEIGHTS = 16
DEFAULT_SEQ_LEN = 2048
DEFAULT_MAX_TOKENS = 65536
DEFAULT_MIN_DAMAGE = 2.0
DEFAULT_MIN_MARGIN = 2.0
MIN_EVAL_TOKENS = 256
"""Fewer scored tokens than this judge nothing: a verdict from a few tokens would be noise in the index."""
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULT_SCHEMES = ("4:64", "4:128", "4:256", "4:512", "4:1024", "4:channel", "8:channel")
"""Round-to-nearest schemes of `quantize-impact`, BITS:BLOCK (BLOCK `channel`: one block per output row)."""
SCHEME = re.compile(r"([2-8]):([1-9]\d*|channel)")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}
UNITS["tib"] = 2**40
MEMORY_KEY = re.compile(r"cpu|(?:cuda:)?(\d+)")


def parse_size(text: str) -> int:
    """Bytes in `70GiB`, `512MB`, `200KB` or `1024` (KB is 1,000 bytes, KiB 1,024)."""
    m = SIZE.fullmatch(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (like 70GiB, 512MB or 200KB)")
    return int(float(m.group(1)) * UNITS[(m.group(2) or "b").lower()])


def memory_key(key: str) -> int | str:
    """`cpu`, or a GPU's index from `3` or `cuda:3`: the keys of accelerate's `max_memory`."""
    m = MEMORY_KEY.fullmatch(str(key))
    if not m:
        raise ValueError(f"{key!r} is not cpu, a GPU index or cuda:N")
    return "cpu" if m.group(1) is None else int(m.group(1))


class SettingsError(UsageError):
    code = Failure.SETTINGS


class AuditSettings(Model):
    """Every knob of an audit, with the documented defaults. Stored with each result."""

    device: str = "auto"
    """auto spreads the model over every GPU this process sees (CPU when there is none)."""
    offload: bool = False
    """Let what does not fit on the device(s) go to CPU memory, then to disk (slow, but any size loads)."""
    max_memory: dict[str, str] | None = None
    """Memory budgets of a spread model that replace the measured ones: `{"0": "70GiB", "cpu": "200GiB"}`."""
    quantize_impact: Literal["off", "on", "gpu"] = "gpu"
    """Measure perplexity under round-to-nearest quantization with and without the super weights kept
    (`auditor.quantimpact`): `gpu` when the audit runs on a GPU (the scheduled job's default); the CLI's
    `audit` asks with --quantize-impact."""
    quant_schemes: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SCHEMES))
    quant_include: list[Literal["head", "embeddings"]] = msgspec.field(default_factory=list)
    """Quantized besides the decoder's linear layers."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
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

    def __post_init__(self) -> None:
        """Refuse settings that cannot work when they are made, from Python as from the CLI or auditor.yaml."""
        if not DEVICE.fullmatch(str(self.device)):
            raise SettingsError(f"device {self.device!r} is not auto, cpu, cuda or cuda:N")
        for key, size in (self.max_memory or {}).items():
            try:
                memory_key(key), parse_size(size)
            except (ValueError, TypeError) as e:
                raise SettingsError(f"max_memory: {e}") from e
        if self.quantize_impact not in ("off", "on", "gpu"):
            raise SettingsError(f"quantize_impact {self.quantize_impact!r} is not off, on or gpu")
        bad = [s for s in self.quant_schemes if not SCHEME.fullmatch(str(s))]
        if bad or not self.quant_schemes:
            what = repr(bad[0]) if bad else "none given"
            raise SettingsError(f"quant_schemes: {what} is not BITS:BLOCK (like 4:128, 8:channel)")
        if not set(self.quant_include) <= {"head", "embeddings"}:
            raise SettingsError(f"quant_include {self.quant_include!r}: only head and embeddings")
        if self.dtype not in DTYPES:
            raise SettingsError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise SettingsError("prompt must be some text")
        for name in ("min_output_ratio", "min_input_ratio", "min_share", "min_damage", "min_margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise SettingsError(f"{name} must be a number, not negative, not {value!r}")
        for name, least in (("max_super_weights", 1), ("seq_len", 2), ("max_tokens", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SettingsError(f"{name} must be a whole number of at least {least}, not {value!r}")
        if self.module_pattern is not None:
            try:
                re.compile(self.module_pattern)
            except (re.error, TypeError) as e:
                raise SettingsError(f"module_pattern {self.module_pattern!r} is not a valid regex: {e}") from e
