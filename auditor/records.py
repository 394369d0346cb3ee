"""Typed records that flow out of detection and ablation.

Plain dataclasses with no torch in sight, so anything that only reads results (the index, the site, a
quantizer) can import them cheaply. `to_dict()` gives the JSON shape that `superweight ... --json` prints.

Coordinates follow the paper: `layer` is 0-based, `row` the output (hidden) channel and `col` the input
(intermediate) channel, so the weight is `down_proj.weight[row, col]` for an `nn.Linear`. Where the
stored tensor is laid out differently (GPT-2's Conv1D keeps [in, out]; fused experts keep [expert, out, in])
`tensor` and `index` say exactly where the scalar lives in the loaded model. These are transformers' names
(version 5): a mixture-of-experts checkpoint file may store each expert separately under older names
(Mixtral's `block_sparse_moe.experts.2.w2.weight`), in the same [out, in] orientation.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["confirmed", "not_confirmed", "none_found"]


def to_dict(obj: Any, *, omit_none: bool = False) -> Any:
    """A dataclass (or list of them) as plain JSON-ready data: tuples as lists, inf and NaN as None.

    With `omit_none`, fields that are None and default to None are left out (compact files).
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name), omit_none=omit_none)
            for f in dataclasses.fields(obj)
            if not (omit_none and f.default is None and getattr(obj, f.name) is None)
        }
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, omit_none=omit_none) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, omit_none=omit_none) for k, v in obj.items()}
    return obj


def from_dict(cls: Any, data: Any) -> Any:
    """Build `cls` (a dataclass, or a type hint over them) from `to_dict`-shaped data.

    Unknown keys are an error, so a misspelt field in a file cannot be dropped silently.
    """
    return converter(cls)(data)


def _same(value: Any) -> Any:
    return value


@functools.cache
def converter(tp: Any) -> Callable[[Any], Any]:
    """A function turning plain data into `tp`, worked out once per type (index loads build many)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return _same
        one = converter(inner[0])
        return _same if one is _same else lambda v: None if v is None else one(v)
    if origin is dict:
        value = converter(args[1])
        return dict if value is _same else lambda v: {k: value(x) for k, x in v.items()}
    if origin in (list, tuple):
        item = converter(args[0])
        collect = list if origin is list else tuple
        return collect if item is _same else lambda v: collect(item(x) for x in v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    if not dataclasses.is_dataclass(tp):
        return _same
    hints = typing.get_type_hints(tp)
    fields = {f.name: converter(hints[f.name]) for f in dataclasses.fields(tp) if f.init}

    def build(data: dict[str, Any]) -> Any:
        try:
            return tp(**{k: fields[k](v) for k, v in data.items()})
        except KeyError as e:
            unknown = sorted(set(data) - set(fields))
            raise ValueError(f"unknown field(s) for {tp.__name__}: {', '.join(unknown)}") from e

    return build


@dataclass(frozen=True)
class WeightRef:
    """Where one scalar of a down projection lives."""

    layer: int
    row: int
    col: int
    expert: int | None = None

    def key(self) -> tuple[int, int | None, int, int]:
        return (self.layer, self.expert, self.row, self.col)


@dataclass(frozen=True)
class SuperWeight:
    """One super weight: where it is and, when measured here, the spike that gave it away.

    Published coordinates (`source: reported` in the index) have only the location fields.
    """

    layer: int
    row: int
    col: int
    expert: int | None = None
    shape: tuple[int, int] | None = None
    """[rows, cols] of the [out, in] matrix: the hidden size and the (expert's) intermediate size."""
    module: str | None = None
    """The down projection's module name in the loaded model, e.g. `model.layers.2.mlp.down_proj`."""
    tensor: str | None = None
    """The parameter holding the scalar, a key of the loaded model's `state_dict()` (for fused experts, not
    necessarily a key of the checkpoint's files: see the module docstring)."""
    index: tuple[int, ...] | None = None
    """The scalar's index into `tensor` as stored ([row, col], [col, row] for Conv1D, [expert, row, col])."""
    value: float | None = None
    """The weight itself."""
    activation: float | None = None
    """The super activation: the down projection's output at (token, row)."""
    input_activation: float | None = None
    """The input spike that the weight carries: the down projection's input at (token, col)."""
    token: int | None = None
    """Position in the detection prompt where the spike happened."""
    output_ratio: float | None = None
    """|activation| over the median of the layer's per-channel output maxima."""
    input_ratio: float | None = None
    """|input_activation| over the median of the layer's per-channel input maxima."""
    share: float | None = None
    """value * input_activation as a fraction of the output (bias removed): how much of the spike this one
    weight carries."""

    def ref(self) -> WeightRef:
        return WeightRef(self.layer, self.row, self.col, self.expert)


@dataclass(frozen=True)
class LayerProfile:
    """The largest |input| and |output| of one layer's down projection(s) on the detection prompt."""

    layer: int
    max_input: float
    input_channel: int
    max_output: float
    output_channel: int
    expert: int | None = None
    """For mixture-of-experts layers: the expert where the output maximum occurred."""


@dataclass(frozen=True)
class DetectionSettings:
    prompt: str
    min_output_ratio: float
    min_input_ratio: float
    min_share: float
    max_super_weights: int
    module_pattern: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, and from where."""

    model: str
    """The Hub id, or the local path as given."""
    loaded_from: Literal["hub", "local", "gguf"]
    revision: str | None
    """The commit sha that was loaded (Hub models); None for local files."""
    architecture: str
    model_type: str
    num_layers: int
    num_parameters: int
    dtype: str
    device: str
    weights_sha256: dict[str, str] | None = None
    """sha256 of each weight file (Hub models), to recognise byte-identical re-uploads."""


@dataclass(frozen=True)
class Detection:
    """The result of `auditor.detect.detect`: candidates from the activation spikes."""

    super_weights: list[SuperWeight]
    profile: list[LayerProfile]
    settings: DetectionSettings
    passes: int
    """Forward passes run: one, plus one after each weight found (the paper's iterative search)."""
    truncated: bool = False
    """True when the search stopped at `max_super_weights` with a spike still present."""


@dataclass(frozen=True)
class WeightPerplexity:
    layer: int
    row: int
    col: int
    perplexity: float | None
    """None when the loss was not finite (see Ablation.diverged)."""
    expert: int | None = None


@dataclass(frozen=True)
class Ablation:
    """Perplexity with the super weights zeroed, against a control of as many of the largest other weights."""

    eval_text: str
    """Where the text came from: `wikitext-2-raw-v1 (test)` or `file:NAME`."""
    eval_sha256: str
    tokens: int
    """Tokens scored (windows x seq_len)."""
    seq_len: int
    perplexity_original: float
    perplexity_ablated: float | None
    perplexity_control: float | None
    verdict: Verdict
    min_damage: float
    min_margin: float
    control_weights: list[WeightRef] = field(default_factory=list)
    per_weight: list[WeightPerplexity] = field(default_factory=list)
    """Each super weight zeroed alone, when there are several."""
    diverged: list[str] = field(default_factory=list)
    """Measurements whose loss was not finite (inf or NaN: the model broke outright), stored as None:
    `ablated`, `control`, or `layer L [row, col]` for a weight zeroed alone."""

    @property
    def damage(self) -> float | None:
        """How many times perplexity grows when the super weights are zeroed (None: not measured, or
        unbounded, when `ablated` diverged)."""
        if self.perplexity_ablated is None:
            return None
        return self.perplexity_ablated / self.perplexity_original

    @property
    def control_damage(self) -> float | None:
        if self.perplexity_control is None:
            return None
        return self.perplexity_control / self.perplexity_original


@dataclass(frozen=True)
class Environment:
    tool_version: str
    torch: str
    transformers: str
    hardware: str
    created_at: str
    """UTC, ISO 8601."""
    elapsed_s: float


@dataclass(frozen=True)
class AuditResult:
    """Everything one audit produced: what `superweight audit --json` prints."""

    info: ModelInfo
    detection: Detection
    ablation: Ablation | None
    environment: Environment

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object of the CLI: model facts at the top, then results."""
        out: dict[str, Any] = to_dict(self.info)
        out["super_weights"] = to_dict(self.detection.super_weights)
        out["profile"] = to_dict(self.detection.profile)
        out["detection"] = {
            "settings": to_dict(self.detection.settings),
            "passes": self.detection.passes,
            "truncated": self.detection.truncated,
        }
        if self.ablation is not None:
            out["ablation"] = to_dict(self.ablation)
            out["ablation"]["damage"] = self.ablation.damage
            out["ablation"]["control_damage"] = self.ablation.control_damage
        out["environment"] = to_dict(self.environment)
        return out
