"""Find super weights in one forward pass per weight (Yu et al. 2024, arXiv 2411.07191).

A super weight W[row, col] of a down projection multiplies a huge input spike at intermediate channel `col`
into a huge output at hidden channel `row`: the super activation. So we hook every down projection, run one
prompt, and for each matrix look at its largest |output| (token t, channel row):

    output_ratio = |y[t, row]| / median_h( max_t |y[t, h]| )          the output spikes
    col          = argmax_c | W[row, c] * x[t, c] |                     the weight that carries it
    share        = W[row, col] * x[t, col] / (y[t, row] - bias[row])    ...carries most of it alone
    input_ratio  = |x[t, col]| / median_i( max_t |x[t, i]| )           ...from a spiking input

A matrix is a candidate when output_ratio >= min_output_ratio, input_ratio >= min_input_ratio and
share >= min_share. The ratios compare a layer with itself, so the test is the same at any scale or dtype.
Choosing `col` by contribution rather than by the largest input or the largest weight is deliberate: the
largest-magnitude weight of a matrix is often not the super weight.

Then the paper's iterative search: take the earliest-layer candidate (later spikes are often its
consequences), zero it, run again, until no candidate remains or `max_super_weights` is reached. Every
weight is restored afterwards. A candidate is not proof: `auditor.ablation` confirms or rejects it.

Hooks reduce on the fly to per-channel maxima and the one input row at the peak; no activation tensor
outlives its hook, and nothing synchronises with the GPU until the pass is over.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .layout import DownProjection, find_down_projections, zeroed
from .placement import input_device
from .records import Detection, DetectionSettings, LayerProfile, SuperWeight, WeightRef
from .settings import (
    DEFAULT_MAX_SUPER_WEIGHTS,
    DEFAULT_MIN_INPUT_RATIO,
    DEFAULT_MIN_OUTPUT_RATIO,
    DEFAULT_MIN_SHARE,
    DEFAULT_PROMPT,
)


@dataclass
class Reduction:
    """What a hook keeps of one matrix's input x [N, in] and output y [N, out]: all device tensors."""

    out_max: torch.Tensor  # [out] max_t |y|
    out_token: torch.Tensor  # [out] argmax_t |y|
    in_max: torch.Tensor  # [in]
    in_token: torch.Tensor  # [in]
    peak: torch.Tensor  # () y[t, row] at the largest |y|, signed
    peak_token: torch.Tensor  # ()
    peak_row: torch.Tensor  # ()
    x_at_peak: torch.Tensor  # [in] x[t, :] at the peak's token, float32


def reduce(x: torch.Tensor, y: torch.Tensor, tokens: torch.Tensor | None = None) -> Reduction:
    """Reduce one call's activations. `tokens` maps rows of x/y to prompt positions (routed experts)."""
    out_max, out_token = y.abs().max(dim=0)
    in_max, in_token = x.abs().max(dim=0)
    row = out_max.argmax()  # the peak is the largest per-channel maximum: no second pass over y
    t = out_token[row]
    position = (lambda i: i) if tokens is None else (lambda i: tokens[i])
    return Reduction(
        out_max=out_max.float(),
        out_token=position(out_token),
        in_max=in_max.float(),
        in_token=position(in_token),
        peak=y[t, row].float(),
        peak_token=position(t),
        peak_row=row,
        x_at_peak=x[t].float(),
    )


def merge(a: Reduction | None, b: Reduction) -> Reduction:
    """Combine two calls on the same matrix (a model that calls a module more than once per pass)."""
    if a is None:
        return b
    keep_a_out, keep_a_in = a.out_max >= b.out_max, a.in_max >= b.in_max
    keep_a_peak = a.peak.abs() >= b.peak.abs()

    def pick(cond: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.where(cond, u, v)

    return Reduction(
        torch.maximum(a.out_max, b.out_max),
        pick(keep_a_out, a.out_token, b.out_token),
        torch.maximum(a.in_max, b.in_max),
        pick(keep_a_in, a.in_token, b.in_token),
        pick(keep_a_peak, a.peak, b.peak),
        pick(keep_a_peak, a.peak_token, b.peak_token),
        pick(keep_a_peak, a.peak_row, b.peak_row),
        pick(keep_a_peak, a.x_at_peak, b.x_at_peak),
    )


@dataclass(frozen=True)
class Spike:
    """The analysed peak of one matrix in one pass."""

    proj: DownProjection
    expert: int | None
    row: int
    col: int
    token: int
    activation: float
    input_activation: float
    value: float
    output_ratio: float
    input_ratio: float
    share: float
    max_output: float
    output_channel: int
    max_input: float
    input_channel: int

    def ref(self) -> WeightRef:
        return WeightRef(self.proj.layer, self.row, self.col, self.expert)

    def is_candidate(self, s: DetectionSettings) -> bool:
        return (
            self.output_ratio >= s.min_output_ratio
            and self.input_ratio >= s.min_input_ratio
            and self.share >= s.min_share
        )

    def super_weight(self) -> SuperWeight:
        p = self.proj
        return SuperWeight(
            layer=p.layer,
            row=self.row,
            col=self.col,
            expert=self.expert,
            shape=p.shape(),
            module=p.name,
            tensor=p.tensor_name,
            index=p.index(self.row, self.col, self.expert),
            value=self.value,
            activation=self.activation,
            input_activation=self.input_activation,
            token=self.token,
            output_ratio=self.output_ratio,
            input_ratio=self.input_ratio,
            share=self.share,
        )


def median_nonzero(v: torch.Tensor) -> float:
    """Median of the positive entries: ReLU models leave many channels at exactly zero."""
    v = v[v > 0]
    return float(v.median()) if v.numel() else 0.0


def ratio(value: float, baseline: float) -> float:
    return abs(value) / baseline if baseline > 0 else 0.0


def analyse(proj: DownProjection, expert: int | None, red: Reduction) -> Spike:
    """Turn one matrix's reduction into a Spike: find the weight that carries the peak."""
    row, token = int(red.peak_row), int(red.peak_token)
    x = red.x_at_peak
    weights = proj.matrix(expert)[row].detach().to(x.device, torch.float32)
    contrib = weights * x
    col = int(contrib.abs().argmax())
    peak = float(red.peak)
    bias = proj.bias(expert)
    net = peak - (float(bias[row]) if bias is not None else 0.0)
    in_max, out_max = red.in_max.cpu(), red.out_max.cpu()
    return Spike(
        proj=proj,
        expert=expert,
        row=row,
        col=col,
        token=token,
        activation=peak,
        input_activation=float(x[col]),
        value=float(weights[col]),
        output_ratio=ratio(peak, median_nonzero(out_max)),
        input_ratio=ratio(float(x[col]), median_nonzero(in_max)),
        share=float(contrib[col]) / net if net != 0 else 0.0,
        max_output=float(out_max.max()),
        output_channel=int(out_max.argmax()),
        max_input=float(in_max.max()),
        input_channel=int(in_max.argmax()),
    )


class Recorder:
    """Forward hooks on every down projection that keep only a `Reduction` per matrix."""

    def __init__(self, projections: list[DownProjection]):
        self.projections = projections
        self.reductions: dict[tuple[int, int | None], Reduction] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Recorder:
        for i, proj in enumerate(self.projections):
            hook = self._experts_hook(i, proj) if proj.kind == "experts" else self._dense_hook(i)
            self.handles.append(proj.module.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _keep(self, key: tuple[int, int | None], red: Reduction) -> None:
        self.reductions[key] = merge(self.reductions.get(key), red)

    def _dense_hook(self, i: int):
        def hook(module, args, kwargs, output):
            x = args[0] if args else next(iter(kwargs.values()))
            self._keep((i, None), reduce(x.reshape(-1, x.shape[-1]), output.reshape(-1, output.shape[-1])))

        return hook

    def _experts_hook(self, i: int, proj: DownProjection):
        # Fused experts run as grouped matmuls with no per-expert module, so recompute each routed expert's
        # down-projection input and output from the router's choice, exactly as transformers' eager path does.
        names = ("hidden_states", "top_k_index", "top_k_weights")

        def hook(module, args, kwargs, output):
            hidden, top_k_index = (list(args) + [kwargs.get(n) for n in names[len(args) :]])[:2]
            # Read once per call: an offloaded module's weights are back on `meta` when its forward hook runs.
            down, up = proj.parameter, expert_inputs(proj)
            for e in top_k_index.unique().tolist():
                if not 0 <= e < proj.num_experts:
                    continue
                tokens = (top_k_index == e).any(dim=-1).nonzero().squeeze(-1)
                x = expert_intermediate(module, up, hidden[tokens], e)
                y = F.linear(x, proj.view(down, e))
                if (b := proj.bias(e)) is not None:
                    y = y + b
                self._keep((i, e), reduce(x, y, tokens))

        return hook

    def spikes(self) -> list[Spike]:
        out = []
        for (i, expert), red in sorted(self.reductions.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            out.append(analyse(self.projections[i], expert, red))
        self.reductions.clear()
        return out


def expert_inputs(proj: DownProjection) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The experts' stacked up (or fused gate-up) weights and bias, wherever they are."""
    module = proj.module
    name = "gate_up_proj" if getattr(module, "has_gate", True) else "up_proj"
    return proj.tensor(name), proj.tensor(f"{name}_bias") if getattr(module, "has_bias", False) else None


def expert_intermediate(module, up: tuple[torch.Tensor, torch.Tensor | None], x: torch.Tensor, e: int) -> torch.Tensor:
    """act(gate) * up for expert e, honouring the flags of transformers' `use_experts_implementation`."""
    w, bias = up
    h = x @ w[e] if getattr(module, "is_transposed", False) else F.linear(x, w[e])
    if bias is not None:
        h = h + bias[e]
    return module._apply_gate(h) if getattr(module, "has_gate", True) else module.act_fn(h)


def profile_of(spikes: list[Spike]) -> list[LayerProfile]:
    """Per layer: the largest |input| and |output| over its down projections (and experts)."""
    by_layer: dict[int, list[Spike]] = {}
    for s in spikes:
        by_layer.setdefault(s.proj.layer, []).append(s)
    profile = []
    for layer, group in sorted(by_layer.items()):
        top_out = max(group, key=lambda s: s.max_output)
        top_in = max(group, key=lambda s: s.max_input)
        profile.append(
            LayerProfile(
                layer=layer,
                max_input=top_in.max_input,
                input_channel=top_in.input_channel,
                max_output=top_out.max_output,
                output_channel=top_out.output_channel,
                expert=top_out.expert,
            )
        )
    return profile


@torch.inference_mode()
def forward(model, input_ids: torch.Tensor) -> None:
    model(input_ids=input_ids, use_cache=False)


def detect(
    model,
    tokenizer,
    *,
    prompt: str = DEFAULT_PROMPT,
    min_output_ratio: float = DEFAULT_MIN_OUTPUT_RATIO,
    min_input_ratio: float = DEFAULT_MIN_INPUT_RATIO,
    min_share: float = DEFAULT_MIN_SHARE,
    max_super_weights: int = DEFAULT_MAX_SUPER_WEIGHTS,
    module_pattern: str | None = None,
    progress: bool = True,
) -> Detection:
    """Find a model's super weights: one forward pass, plus one more per weight found.

    Args:
        model: a transformers causal LM (any device and dtype).
        tokenizer: its tokenizer; `prompt` is encoded with its special tokens, as the model saw in training.
        min_output_ratio, min_input_ratio, min_share: the spike criterion (module docstring).
        max_super_weights: stop after this many (the record then says `truncated`).
        module_pattern: override the built-in table of down-projection names (`auditor.layout`).

    Returns:
        A `Detection` whose `profile` comes from the first, unmodified pass. The model's weights are
        exactly as before when this returns, or raises.
    """
    settings = DetectionSettings(
        prompt, min_output_ratio, min_input_ratio, min_share, max_super_weights, module_pattern
    )
    projections = find_down_projections(model, module_pattern)
    device = input_device(model)
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    found: list[Spike] = []
    truncated = False
    passes = 0
    with Recorder(projections) as recorder, contextlib.ExitStack() as restore:
        bar = tqdm(desc="detecting", unit="pass", disable=not progress, leave=False)
        while True:
            forward(model, input_ids)
            passes += 1
            bar.update()
            spikes = recorder.spikes()
            if passes == 1:
                profile = profile_of(spikes)
            done = {s.ref() for s in found}
            candidates = [s for s in spikes if s.is_candidate(settings) and s.ref() not in done]
            if not candidates:
                break
            if len(found) == max_super_weights:
                truncated = True
                break
            best = min(candidates, key=lambda s: (s.proj.layer, -abs(s.activation)))
            found.append(best)
            restore.enter_context(zeroed(projections, [best.ref()]))
        bar.close()
    return Detection([s.super_weight() for s in found], profile, settings, passes, truncated)
