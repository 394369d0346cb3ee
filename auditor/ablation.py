"""Confirm detected super weights by zeroing them, against a control.

Perplexity on the evaluation windows is measured for:
  (a) the original model;
  (b) all detected super weights zeroed;
  (c) a control: as many of the largest-magnitude *other* weights of the same matrices zeroed;
  and each super weight zeroed alone, when there are several.

The verdict (`auditor.verdict`): confirmed when the ablated perplexity is at least min_damage (2) times the
original and at least min_margin (2) times the control's: removing the weights hurts a lot, and far more than
removing as many large ordinary weights; not_confirmed otherwise; none_found when detection found nothing.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from .errors import EvalTextError, NonFiniteError
from .layout import DownProjection, find_down_projections, projection_for, zeroed
from .records import Ablation, Detection, WeightPerplexity, WeightRef
from .settings import DEFAULT_MIN_DAMAGE, DEFAULT_MIN_MARGIN, MIN_EVAL_TOKENS
from .verdict import judge


@torch.inference_mode()
def perplexity(model, windows: torch.Tensor, *, desc: str = "perplexity", progress: bool = True) -> float:
    """exp(mean next-token negative log-likelihood) over all windows.

    The loss is taken from the logits, not the model's `.loss`, which for MoE models whose config asks for
    router logits also holds the router's auxiliary loss (and zeroing a weight changes the routing).
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for window in tqdm(windows, desc=desc, unit="window", disable=not progress, leave=False):
        ids = window.to(device)
        logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1]
        total += float(torch.nn.functional.cross_entropy(logits.float(), ids[1:], reduction="sum"))
        count += ids.shape[0] - 1
    nll = total / count
    return math.exp(nll) if nll < 700 else math.inf


def control_weights(projections: list[DownProjection], refs: list[WeightRef]) -> list[WeightRef]:
    """For each matrix holding super weights, as many of its largest-|w| weights that are not one of them."""
    by_matrix: dict[tuple[int, int | None], list[WeightRef]] = defaultdict(list)
    for r in refs:
        by_matrix[r.layer, r.expert].append(r)
    control = []
    for (layer, expert), mine in by_matrix.items():
        m = projection_for(projections, layer, expert).matrix(expert)
        cols = m.shape[1]
        skip = {(r.row, r.col) for r in mine}
        top = torch.topk(m.detach().abs().flatten().float(), len(mine) + len(skip)).indices.tolist()
        picked = [divmod(i, cols) for i in top if divmod(i, cols) not in skip][: len(mine)]
        control += [WeightRef(layer, row, col, expert) for row, col in picked]
    return control


def ablate(
    model,
    detection: Detection,
    windows: torch.Tensor,
    *,
    eval_name: str,
    eval_sha256: str,
    min_damage: float = DEFAULT_MIN_DAMAGE,
    min_margin: float = DEFAULT_MIN_MARGIN,
    progress: bool = True,
) -> Ablation:
    """Measure the damage of zeroing the detected super weights; the model is restored afterwards.

    Raises:
        EvalTextError: fewer than MIN_EVAL_TOKENS tokens to score; NonFiniteError: the original model's
        perplexity is not finite (the eval text or dtype is unusable).
    """
    if windows.numel() < MIN_EVAL_TOKENS:
        raise EvalTextError(
            f"{eval_name} gives {windows.numel()} token(s) to score; judging needs at least {MIN_EVAL_TOKENS} "
            "(a longer text, or a larger --max-tokens)"
        )
    projections = find_down_projections(model, detection.settings.module_pattern)
    refs = [w.ref() for w in detection.super_weights]

    def measure(desc: str, zero: list[WeightRef]) -> float:
        with zeroed(projections, zero):
            return perplexity(model, windows, desc=desc, progress=progress)

    original = measure("perplexity (original)", [])
    if not math.isfinite(original):
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        hint = "try --dtype float32" if dtype != "float32" else "the model breaks on this text even in float32"
        raise NonFiniteError(f"the unmodified model's perplexity is not finite in {dtype}: {hint}")
    common = dict(
        eval_text=eval_name,
        eval_sha256=eval_sha256,
        tokens=int(windows.numel()),
        seq_len=int(windows.shape[1]),
        perplexity_original=original,
        min_damage=min_damage,
        min_margin=min_margin,
    )
    if not refs:
        return Ablation(**common, perplexity_ablated=None, perplexity_control=None, verdict="none_found")
    ablated = measure("perplexity (super weights zeroed)", refs)
    control = control_weights(projections, refs)
    controlled = measure("perplexity (control)", control)
    diverged = [name for name, value in (("ablated", ablated), ("control", controlled)) if not math.isfinite(value)]
    per_weight = []
    for r in refs:
        # One super weight zeroed alone is the whole set zeroed: its figure is `ablated`, no second pass.
        ppl = ablated if len(refs) == 1 else measure(f"perplexity (layer {r.layer} [{r.row}, {r.col}] zeroed)", [r])
        if not math.isfinite(ppl):
            diverged.append(f"layer {r.layer} [{r.row}, {r.col}]")
        per_weight.append(WeightPerplexity(r.layer, r.row, r.col, finite(ppl), r.expert))
    return Ablation(
        **common,
        perplexity_ablated=finite(ablated),
        perplexity_control=finite(controlled),
        verdict=judge(original, ablated, controlled, min_damage=min_damage, min_margin=min_margin),
        control_weights=control,
        per_weight=per_weight,
        diverged=diverged,
    )


def finite(value: float) -> float | None:
    """A perplexity to store: None when the loss was not finite (the record names it in `diverged`)."""
    return value if math.isfinite(value) else None
