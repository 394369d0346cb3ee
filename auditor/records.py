"""Typed records that flow out of detection and ablation.

Plain dataclasses with no torch in sight, so anything that only reads results (the index, the site, a
quantizer) can import them cheaply. `to_dict()` gives the JSON shape that `superweight ... --json` prints.

Coordinates follow the paper: `layer` is 0-based, `row` the output (hidden) channel and `col` the input
(intermediate) channel, so the weight is `down_proj.weight[row, col]` for an `nn.Linear`. Where the
stored tensor is laid out differently (GPT-2's Conv1D keeps [in, out]; fused experts keep [expert, out, in])
`tensor` and `index` say exactly where the scalar lives.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["confirmed", "not_confirmed", "none_found"]


def to_dict(obj: Any) -> Any:
    """A dataclass (or list of them) as plain JSON-ready data: tuples as lists, inf and NaN as None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


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
    """One detected super weight and the spike that gave it away."""

    layer: int
    row: int
    col: int
    expert: int | None
    module: str
    """The down projection's module name in the loaded model, e.g. `model.layers.2.mlp.down_proj`."""
    tensor: str
    """The parameter holding the scalar, a key of `model.state_dict()`."""
    index: tuple[int, ...]
    """The scalar's index into `tensor` as stored ([row, col], [col, row] for Conv1D, [expert, row, col])."""
    value: float
    """The weight itself."""
    activation: float
    """The super activation: the down projection's output at (token, row)."""
    input_activation: float
    """The input spike that the weight carries: the down projection's input at (token, col)."""
    token: int
    """Position in the detection prompt where the spike happened."""
    output_ratio: float
    """|activation| over the median of the layer's per-channel output maxima."""
    input_ratio: float
    """|input_activation| over the median of the layer's per-channel input maxima."""
    share: float
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
    source: Literal["hub", "local", "gguf"]
    revision: str | None
    """The commit sha that was loaded (Hub models); None for local files."""
    architecture: str
    model_type: str
    num_layers: int
    num_parameters: int
    dtype: str
    device: str


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
    expert: int | None
    perplexity: float


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

    @property
    def damage(self) -> float | None:
        """How many times perplexity grows when the super weights are zeroed."""
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
