"""Typed records that flow out of detection and ablation.

Typed models (`auditor.models.Model`) with no torch in sight, so anything that only reads results (the
index, the site, a quantizer) can import them cheaply. `AuditResult.to_json()` is what `superweight audit
--json` prints. A `SuperWeight` out of detection is a candidate; the ablation's `per_weight` says which
candidates zeroing proved.

Coordinates follow the paper: `layer` is 0-based, `row` the output (hidden) channel and `col` the input
(intermediate) channel, so the weight is `down_proj.weight[row, col]` for an `nn.Linear`. Where the
stored tensor is laid out differently (GPT-2's Conv1D keeps [in, out]; fused experts keep [expert, out, in])
`tensor` and `index` say exactly where the scalar lives in the loaded model. These are transformers' names
(version 5): a mixture-of-experts checkpoint file may store each expert separately under older names
(Mixtral's `block_sparse_moe.experts.2.w2.weight`), in the same [out, in] orientation.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from msgspec import Meta, field

from .models import Count, DottedName, Model, Positive, Sha256, Text, to_data, to_full_data

Verdict = Literal["confirmed", "not_confirmed", "none_found"]
Dtype = Literal["float32", "float16", "bfloat16"]


class WeightRef(Model):
    """Where one scalar of a down projection lives."""

    layer: Count
    row: Count
    col: Count
    expert: Count | None = None

    def key(self) -> tuple[int, int | None, int, int]:
        return (self.layer, self.expert, self.row, self.col)

    @property
    def label(self) -> str:
        """`layer 1 [7, 33]`: how reports name the weight, and how `Ablation.diverged` names its figures."""
        return f"layer {self.layer} [{self.row}, {self.col}]"


class SuperWeight(Model):
    """One super weight: where it is and, when measured here, the spike that gave it away.

    Published coordinates (`source: reported` in the index) have only the location fields.
    """

    layer: Count
    row: Count
    col: Count
    shape: tuple[Positive, Positive]
    """[rows, cols] of the [out, in] matrix: the hidden size and the (expert's) intermediate size."""
    expert: Count | None = None
    module: DottedName | None = None
    """The down projection's module name in the loaded model, e.g. `model.layers.2.mlp.down_proj`."""
    tensor: DottedName | None = None
    """The parameter holding the scalar, a key of the loaded model's `state_dict()` (for fused experts, not
    necessarily a key of the checkpoint's files: see the module docstring)."""
    index: Annotated[tuple[Count, ...], Meta(min_length=2, max_length=3)] | None = None
    """The scalar's index into `tensor` as stored ([row, col], [col, row] for Conv1D, [expert, row, col])."""
    value: float | None = None
    """The weight itself."""
    activation: float | None = None
    """The super activation: the down projection's output at (token, row)."""
    input_activation: float | None = None
    """The input spike that the weight carries: the down projection's input at (token, col)."""
    token: Count | None = None
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


class LayerProfile(Model):
    """The largest |input| and |output| of one layer's down projection(s) on the detection prompt."""

    layer: Count
    max_input: float | None
    input_channel: Count
    max_output: float | None
    output_channel: Count
    expert: Count | None = None
    """For mixture-of-experts layers: the expert where the output maximum occurred."""


class DetectionSettings(Model):
    prompt: Text(2000)
    min_output_ratio: float
    min_input_ratio: float
    min_share: float
    max_super_weights: Count
    module_pattern: Text(500) | None = None


class ModelInfo(Model):
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


class Detection(Model, omit_defaults=False):
    """The result of `auditor.detect.detect`: candidates from the activation spikes."""

    super_weights: list[SuperWeight]
    profile: list[LayerProfile]
    settings: DetectionSettings
    passes: Positive
    """Forward passes run: one, plus one after each weight found (the paper's iterative search)."""
    truncated: bool = False
    """True when the search stopped at `max_super_weights` with a spike still present."""


WeightVerdict = Literal["super_weight", "in_group", "rejected"]
"""`super_weight`: zeroing it alone clears the bar against its control; `in_group`: it does so only with the
other `in_group` weights of its record (each is needed); `rejected`: neither."""
WEIGHT_VERDICT_LABELS = {
    "super_weight": "super weight",
    "in_group": "super weight (in group)",
    "rejected": "rejected",
    None: "judged as a set",  # records from before per-weight verdicts
}


class WeightPerplexity(Model):
    """One candidate zeroed alone, against its control: the largest other weight of its matrix zeroed alone."""

    layer: Count
    row: Count
    col: Count
    perplexity: float | None
    """None when the loss was not finite (see Ablation.diverged), or when the screen left it out."""
    expert: int | None = None
    control: WeightRef | None = None
    perplexity_control: float | None = None
    screened: float | None = None
    """Its perplexity zeroed alone on the screening slice (`Ablation.screen_tokens`)."""
    verdict: WeightVerdict | None = None
    """None in records from before per-weight verdicts (schema 2), where the weights were judged as a set."""

    def ref(self) -> WeightRef:
        return WeightRef(self.layer, self.row, self.col, self.expert)


class Ablation(Model):
    """Each candidate judged alone (`per_weight`), and the proven super weights zeroed together (or every
    candidate, when none is proven) against a control of as many of the largest other weights."""

    eval_text: Text(200)
    """Where the text came from: `wikitext-2-raw-v1 (test)` or `file:NAME`."""
    eval_sha256: Sha256
    tokens: Annotated[int, Meta(ge=2)]
    """Tokens scored (windows x seq_len)."""
    seq_len: Annotated[int, Meta(ge=2)]
    perplexity_original: Annotated[float, Meta(gt=0)]
    perplexity_ablated: float | None
    perplexity_control: float | None
    verdict: Verdict
    min_damage: float
    min_margin: float
    control_weights: list[WeightRef] = field(default_factory=list)
    per_weight: list[WeightPerplexity] = field(default_factory=list)
    """Each candidate zeroed alone, with its control and its own verdict."""
    diverged: list[Text(100)] = field(default_factory=list)
    """Measurements whose loss was not finite (inf or NaN: the model broke outright), stored as None:
    `ablated`, `control`, `layer L [row, col]` for a weight zeroed alone, `control of layer L [row, col]`,
    `group`, `group control`."""
    screen_tokens: int | None = None
    """Tokens of the screening slice (the first windows), when candidates were screened on it first."""
    screen_original: float | None = None
    """The unmodified model's perplexity on that slice."""
    group_perplexity: float | None = None
    """The `in_group` weights zeroed together."""
    group_control: float | None = None
    """Their controls zeroed together."""

    def seen(self, name: str, figure: float | None) -> float | None:
        """A figure as the verdict saw it: inf where `diverged` names it (it is stored as None)."""
        return math.inf if figure is None and name in self.diverged else figure

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


class QuantScheme(Model):
    """One round-to-nearest configuration: `bits`-bit asymmetric integers, one scale and zero point per
    `block` consecutive inputs of a row (None: per channel, one block per output row)."""

    bits: Annotated[int, Meta(ge=2, le=8)]
    block: Positive | None = None

    @property
    def label(self) -> str:
        """`4-bit, 256-block` or `8-bit, per-channel`."""
        return f"{self.bits}-bit, {'per-channel' if self.block is None else f'{self.block}-block'}"


class QuantSettings(Model, omit_defaults=False):
    """How `quantization` was measured (`auditor.quantimpact`)."""

    schemes: Annotated[list[QuantScheme], Meta(min_length=1)]
    include: list[Literal["head", "embeddings"]] = field(default_factory=list)
    """Quantized besides the decoder's linear layers (by default, neither the LM head nor the embeddings)."""
    clip_z: list[float] = field(default_factory=list)
    """The z-score thresholds tried for `rtn_sw_clip` (weights beyond mean +- z std of their matrix clipped)."""
    calibration_tokens: Count = 0
    """Tokens the clipping threshold was chosen on: text after the evaluation windows (or the first window)."""


class QuantRow(Model):
    """Perplexities of the model quantized with one scheme (None: the loss was not finite)."""

    bits: Annotated[int, Meta(ge=2, le=8)]
    rtn: float | None
    """Every quantized weight rounded to nearest."""
    block: Positive | None = None
    rtn_sw: float | None = None
    """The same with the super weights held out (set to 0 while the rest is quantized, then restored)."""
    rtn_sw_clip: float | None = None
    """The same, with the other outliers also clipped before quantizing (at `clip_z`)."""
    clip_z: float | None = None
    """The threshold the calibration chose (None: clipping helped at no threshold tried)."""

    @property
    def scheme(self) -> QuantScheme:
        return QuantScheme(self.bits, self.block)


class Quantization(Model):
    """What simulated round-to-nearest weight quantization does to the model, with and without its super
    weights kept: on the audit's evaluation windows, against `perplexity_original`."""

    perplexity_original: Annotated[float, Meta(gt=0)]
    tokens: Annotated[int, Meta(ge=2)]
    held_out: list[WeightRef]
    """The super weights held out (those the ablation proved); empty: only `rtn` was measured."""
    rows: list[QuantRow]
    settings: QuantSettings


class Environment(Model):
    tool_version: str
    torch: str
    transformers: str
    hardware: str
    created_at: str
    """UTC, ISO 8601."""
    elapsed_s: float


def judged(candidates: list[SuperWeight], ablation: Ablation | None) -> tuple[list[SuperWeight], list[SuperWeight]]:
    """(super weights, rejected candidates): the candidates split by the ablation's per-weight verdicts
    (without an ablation, or from before per-weight verdicts, every candidate is in the first list)."""
    rejected = {w.ref() for w in ablation.per_weight if w.verdict == "rejected"} if ablation else set()
    return [w for w in candidates if w.ref() not in rejected], [w for w in candidates if w.ref() in rejected]


class AuditResult(Model):
    """Everything one audit produced: what `superweight audit --json` prints."""

    info: ModelInfo
    detection: Detection
    ablation: Ablation | None
    environment: Environment
    quantization: Quantization | None = None

    def judged(self) -> tuple[list[SuperWeight], list[SuperWeight]]:
        """(super weights, rejected candidates): see `judged`."""
        return judged(self.detection.super_weights, self.ablation)

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object of the CLI: model facts at the top, then results. `super_weights` holds the
        candidates for `detect`; for `audit`, those zeroing proved, the others in `rejected_candidates`."""
        out: dict[str, Any] = to_full_data(self.info)
        proven, rejected = self.judged()
        out["super_weights"] = to_full_data(proven)
        if self.ablation is not None:
            out["rejected_candidates"] = to_full_data(rejected)
        out["profile"] = to_full_data(self.detection.profile)
        out["detection"] = {
            "settings": to_full_data(self.detection.settings),
            "passes": self.detection.passes,
            "truncated": self.detection.truncated,
        }
        if self.ablation is not None:
            out["ablation"] = to_full_data(self.ablation)
            out["ablation"]["damage"] = to_data(self.ablation.damage)
            out["ablation"]["control_damage"] = to_data(self.ablation.control_damage)
        if self.quantization is not None:
            out["quantization"] = to_full_data(self.quantization)
        out["environment"] = to_full_data(self.environment)
        return out
