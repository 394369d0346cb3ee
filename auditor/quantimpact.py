"""What round-to-nearest weight quantization does to a model, with and without its super weights kept.

For each scheme of the grid (default: 4-bit at blocks of 64 to 1,024 inputs and per channel, 8-bit per
channel), perplexity on the audit's own evaluation windows with every linear layer of the decoder quantized
(`auditor.quantize`; the LM head and the embeddings when asked):

- `rtn`: every weight rounded to nearest;
- `rtn_sw`: the proven super weights held out (0 while the rest is quantized) and restored exactly;
- `rtn_sw_clip`: the same with the other outliers clipped first, at the z-score (mean +- z std of each
  matrix, from CLIP_Z or none) that gives the lowest perplexity on a calibration slice: the text after the
  evaluation windows (or its first window when there is no more), so the threshold is not tuned on the
  figures it produces.

The model is never changed, so it is the same to the bit afterwards, and no second copy of it is made: each
quantized module computes with a quantized copy of its weights made when it is called (a forward pre-hook
swaps the copy's storage in, a forward hook swaps the original back), one layer at a time. The copy is
remade at every forward, which holds at least BATCH windows, so it costs little next to the pass
(`benchmarks/bench_quantize.py`).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import UsageError
from .layout import classify, decoder_layers, find_down_projections, projection_for
from .placement import hooks_of
from .quantize import quantize
from .records import Quantization, QuantRow, QuantScheme, QuantSettings, WeightRef
from .scoring import Scorer, windows_per_forward
from .settings import DEFAULT_SCHEMES

BATCH = 4
"""Windows a quantized forward takes at least: the quantized copies are made once per forward, so on a CPU
(one window a forward otherwise, `scoring.windows_per_forward`) four windows share them."""
CLIP_Z = (3.0, 4.0, 6.0, 10.0)
"""z-score thresholds tried for clipping (with none): from clipping ~0.3% of a Gaussian's values to only
far outliers."""


def parse_scheme(text: str) -> QuantScheme:
    """`4:128` or `8:channel` (checked by `AuditSettings`)."""
    bits, _, block = text.partition(":")
    return QuantScheme(int(bits), None if block == "channel" else int(block))


@dataclass
class Target:
    """One weight tensor to quantize, seen as [..., out, in] (blocks run along the inputs)."""

    module: nn.Module
    attr: str
    transposed: bool
    held: list[tuple[int, ...]]

    def quantized(self, scheme: QuantScheme, hold: bool, clip_z: float | None) -> torch.Tensor:
        w = getattr(self.module, self.attr).data
        view = w.transpose(-1, -2) if self.transposed else w
        q = quantize(view, scheme.bits, scheme.block, held=self.held if hold else (), clip_z=clip_z)
        return q.transpose(-1, -2) if self.transposed else q


def targets(
    model: nn.Module, held: list[WeightRef], include: list[str] = (), module_pattern: str | None = None
) -> list[Target]:
    """The decoder's linear weights (Linear, GPT-2's Conv1D, fused experts), and the head and input
    embeddings when `include` names them; each with the indices of the super weights it holds, in the
    down projections detection used (`module_pattern`, as given to it)."""
    found: list[Target] = []
    for module in decoder_layers(model)[1].modules():
        kind = classify(module)
        if kind == "experts":  # every stacked projection of the experts, not only down_proj
            transposed = bool(getattr(module, "is_transposed", False))
            for attr, p in module.named_parameters(recurse=False):
                if p.dim() == 3:
                    found.append(Target(module, attr, transposed, []))
        elif kind is not None:
            found.append(Target(module, "weight", kind == "conv1d", []))
    if "head" in include and isinstance(getattr(model.get_output_embeddings(), "weight", None), torch.Tensor):
        found.append(Target(model.get_output_embeddings(), "weight", False, []))
    if "embeddings" in include:
        found.append(Target(model.get_input_embeddings(), "weight", False, []))
    if held:
        projections = find_down_projections(model, module_pattern)
        for ref in held:
            proj = projection_for(projections, ref.layer, ref.expert)
            target = next((t for t in found if t.module is proj.module and t.attr == proj.attr), None)
            if target is None:  # a pattern's module of a kind the walk above does not quantize: it is held
                target = Target(proj.module, proj.attr, proj.kind == "conv1d", [])
                found.append(target)
            target.held.append((ref.row, ref.col) if ref.expert is None else (ref.expert, ref.row, ref.col))
    return found


@contextlib.contextmanager
def quantized(targets: list[Target], scheme: QuantScheme, *, hold: bool, clip_z: float | None) -> Iterator[None]:
    """Within: each target's module computes with its weights quantized, made at each call and dropped
    after it; the weights themselves are never written."""
    by_module: dict[nn.Module, list[Target]] = defaultdict(list)
    for t in targets:
        by_module[t.module].append(t)
    saved: dict[int, list[tuple[nn.Parameter, torch.Tensor]]] = {}

    def swap_in(module, args):
        saved[id(module)] = [(getattr(module, t.attr), getattr(module, t.attr).data) for t in by_module[module]]
        for t in by_module[module]:
            getattr(module, t.attr).data = t.quantized(scheme, hold, clip_z)

    def swap_back(module, args, output):
        for param, data in saved.pop(id(module), []):
            param.data = data

    handles = []
    try:
        for module in by_module:
            handles.append(module.register_forward_pre_hook(swap_in))
            handles.append(module.register_forward_hook(swap_back, always_call=True))
        yield
    finally:
        for h in handles:
            h.remove()


def refuse_offloaded(model: nn.Module) -> None:
    """Raises UsageError for a model offloaded to CPU or disk: its weights are not where a hook can swap them."""
    if any(getattr(h, "offload", False) for m in model.modules() for h in hooks_of(m)):
        raise UsageError("quantize-impact needs the model on its devices: it cannot run with --offload")


def measure(
    model: nn.Module,
    windows: torch.Tensor,
    calibration: torch.Tensor,
    held: list[WeightRef],
    *,
    perplexity_original: float,
    schemes: list[str] | tuple[str, ...] = DEFAULT_SCHEMES,
    include: list[str] = (),
    clip_z: tuple[float, ...] = CLIP_Z,
    module_pattern: str | None = None,
    progress: bool = True,
) -> Quantization:
    """Perplexity on `windows` under each RTN scheme, plain and with the super weights `held` kept (and
    outliers clipped at the threshold `calibration` chooses). The model is the same afterwards, to the bit.

    Raises:
        UsageError: the model is offloaded (its weights are not where a hook can swap them).
    """
    refuse_offloaded(model)
    found = targets(model, held, list(include), module_pattern)
    grid = [parse_scheme(s) for s in schemes]
    chunk = 0 if "head" in include else None  # the chunked loss slices the head itself, past its hooks
    batch = max(BATCH, windows_per_forward(model, windows.shape[1]))
    # Built once, on the model as it is (a scorer's head check is two forwards); each quantized state is
    # a model of its own, so a scorer's results are cleared before each measurement.
    sets = {"eval": windows, "calibration": calibration} if held else {"eval": windows}
    scorers = {
        k: Scorer(model, on, [], cache_bytes=0, chunk_bytes=chunk, batch=batch, progress=False)
        for k, on in sets.items()
    }

    def perplexity(scheme: QuantScheme, hold: bool, z: float | None, on: str = "eval") -> float | None:
        scorers[on].results.clear()
        with quantized(found, scheme, hold=hold, clip_z=z):
            value = scorers[on].perplexity()
        return value if math.isfinite(value) else None

    rows = []
    for scheme in tqdm(grid, desc="quantize-impact", unit="scheme", disable=not progress, leave=False):
        row = QuantRow(scheme.bits, perplexity(scheme, False, None), scheme.block)
        if held:
            calibrated = {z: perplexity(scheme, True, z, "calibration") for z in (None, *clip_z)}
            best = min(calibrated, key=lambda z: math.inf if calibrated[z] is None else calibrated[z])
            rtn_sw = perplexity(scheme, True, None)
            row = QuantRow(
                scheme.bits,
                row.rtn,
                scheme.block,
                rtn_sw=rtn_sw,
                rtn_sw_clip=rtn_sw if best is None else perplexity(scheme, True, best),
                clip_z=best,
            )
        rows.append(row)
    settings = QuantSettings(
        schemes=grid,
        include=sorted(include),
        clip_z=list(clip_z) if held else [],
        calibration_tokens=int(calibration.numel()) if held else 0,
    )
    return Quantization(perplexity_original, int(windows.numel()), list(held), rows, settings)
