"""Prove each detected candidate by zeroing it, against a control; the verdict is per weight.

Perplexity on the evaluation windows is measured for:
  (a) the original model;
  (b) each candidate zeroed alone, and its control alone: the largest-magnitude weight of the same matrix
      that is not a candidate. A candidate is a `super_weight` when its damage clears the bar (below);
  (c) the candidates that are not proven alone, when zeroing all of them together clears the bar against
      their controls: a group grown greedily (most damaging first) until it clears the bar, then each member
      it does not need dropped again. The members left are `in_group`: the paper reports weights that matter
      only together, and redundant copies do nothing alone. Every other candidate is `rejected`, kept in the
      record with its figures;
  (d) the proven weights zeroed together (every candidate, when none is proven) against as many of the
      largest other weights of the same matrices: the record's overall figures.

With several candidates and more than one window, they are first screened on a slice (the first eighth of
the windows, at least MIN_EVAL_TOKENS tokens): one whose lone damage there is under SCREEN_MIN_DAMAGE (1%
more perplexity) is not measured alone on the full text (it cannot be a super weight alone), only
considered for a group. The bar (`auditor.verdict`): zeroed perplexity at
least min_damage (2) times the original and min_margin (2) times the control's.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from .errors import EvalTextError, NonFiniteError
from .layout import DownProjection, find_down_projections, projection_for
from .records import Ablation, Detection, WeightPerplexity, WeightRef
from .scoring import Scorer, Stats
from .settings import DEFAULT_MIN_DAMAGE, DEFAULT_MIN_MARGIN, MIN_EVAL_TOKENS
from .verdict import judge


def perplexity(model, windows: torch.Tensor, *, progress: bool = True) -> float:
    """exp(mean next-token negative log-likelihood) of the model over all windows."""
    return Scorer(model, windows, [], cache_bytes=0, progress=progress).perplexity()


def control_weights(
    projections: list[DownProjection], refs: list[WeightRef], exclude: list[WeightRef] = ()
) -> list[WeightRef]:
    """For each matrix holding weights of `refs`, as many of its largest-|w| weights that are none of them
    (nor of `exclude`: the other candidates)."""
    by_matrix: dict[tuple[int, int | None], list[WeightRef]] = defaultdict(list)
    for r in refs:
        by_matrix[r.layer, r.expert].append(r)
    control = []
    for (layer, expert), mine in by_matrix.items():
        m = projection_for(projections, layer, expert).matrix(expert)
        cols = m.shape[1]
        skip = {(r.row, r.col) for r in [*mine, *exclude] if (r.layer, r.expert) == (layer, expert)}
        top = torch.topk(m.detach().abs().flatten().float(), len(mine) + len(skip)).indices.tolist()
        picked = [divmod(i, cols) for i in top if divmod(i, cols) not in skip][: len(mine)]
        control += [WeightRef(layer, row, col, expert) for row, col in picked]
    return control


SCREEN_FRACTION = 8
SCREEN_MIN_DAMAGE = 1.01


def screen_slice(windows: torch.Tensor) -> int | None:
    """How many of the first windows to screen on, or None when that would be (nearly) all of them."""
    n = max(-(-windows.shape[0] // SCREEN_FRACTION), -(-MIN_EVAL_TOKENS // windows.shape[1]))
    return n if n < windows.shape[0] else None


def ablate(
    model,
    detection: Detection,
    windows: torch.Tensor,
    *,
    eval_name: str,
    eval_sha256: str,
    min_damage: float = DEFAULT_MIN_DAMAGE,
    min_margin: float = DEFAULT_MIN_MARGIN,
    screen: bool = True,
    stats: Stats | None = None,
    progress: bool = True,
) -> Ablation:
    """Judge each detected candidate by zeroing it (see the module docstring); the model is restored.

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
    diverged: list[str] = []
    scorer = Scorer(model, windows, projections, boundaries=[r.layer for r in refs], stats=stats, progress=progress)

    def measure(desc: str, zero: list[WeightRef], n: int | None = None, name: str | None = None) -> float:
        value = scorer.perplexity(zero, n, desc=f"perplexity ({desc})")
        if name is not None and not math.isfinite(value):
            diverged.append(name)
        return value

    def bar(zeroed_ppl: float, control_ppl: float) -> bool:
        return judge(original, zeroed_ppl, control_ppl, min_damage=min_damage, min_margin=min_margin) == "confirmed"

    original = measure("original", [])
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

    # (b), after the screen: each candidate alone, against its own control.
    where = {r: r.label for r in refs}
    controls = {r: control_weights(projections, [r], exclude=refs)[0] for r in refs}
    part = screen_slice(windows) if screen and len(refs) > 1 else None
    screened: dict[WeightRef, float] = {}
    if part is not None:
        base = measure("screen: original", [], part)  # the original pass's first windows: no new pass
        screened = {r: measure(f"screen: {where[r]} zeroed", [r], part) for r in refs}
        common |= {"screen_tokens": part * int(windows.shape[1]), "screen_original": base}
    survivors = [r for r in refs if r not in screened or screened[r] >= SCREEN_MIN_DAMAGE * common["screen_original"]]
    alone = {r: measure(f"{where[r]} zeroed", [r], name=where[r]) for r in survivors}
    controlled = {r: measure(f"control of {where[r]}", [controls[r]], name=f"control of {where[r]}") for r in survivors}
    verdicts = {r: "super_weight" if bar(alone[r], controlled[r]) else "rejected" for r in survivors}

    # (c) a group among the rest (the screened-out too: redundant weights each do nothing alone), most
    # damaging first; only when all of them together clear the bar is there a group to look for.
    def damage(r: WeightRef) -> float:
        return alone[r] / original if r in alone else screened[r] / common["screen_original"]

    rest = sorted((r for r in refs if verdicts.get(r) != "super_weight"), key=damage, reverse=True)

    def group_figures(group: list[WeightRef]) -> tuple[float, float]:
        return measure("group", group), measure("group control", [controls[r] for r in group])

    group, figures = [], None
    if len(rest) >= 2 and bar(*(everyone := group_figures(rest))):
        group, figures = find_group(rest, group_figures, bar, everyone)
    for r in group:
        verdicts[r] = "in_group"
    if figures is not None:
        common |= {"group_perplexity": finite(figures[0]), "group_control": finite(figures[1])}
        diverged += [name for name, v in zip(("group", "group control"), figures, strict=True) if not math.isfinite(v)]

    # (d) the proven weights together (every candidate when none is proven).
    proven = [r for r in refs if verdicts.get(r) in ("super_weight", "in_group")]
    together = proven or refs
    control = control_weights(projections, together, exclude=refs)
    # With one proven weight these are (b)'s two measurements again, and cost nothing.
    ablated = measure("proven weights zeroed" if proven else "all candidates zeroed", together, name="ablated")
    set_control = measure("control", control, name="control")
    per_weight = [
        WeightPerplexity(
            r.layer,
            r.row,
            r.col,
            finite(alone[r]) if r in alone else None,
            r.expert,
            control=controls[r],
            perplexity_control=finite(controlled[r]) if r in controlled else None,
            screened=finite(screened[r]) if r in screened else None,
            verdict=verdicts.get(r, "rejected"),
        )
        for r in refs
    ]
    return Ablation(
        **common,
        perplexity_ablated=finite(ablated),
        perplexity_control=finite(set_control),
        verdict=judge(original, ablated, set_control, min_damage=min_damage, min_margin=min_margin),
        control_weights=control,
        per_weight=per_weight,
        diverged=diverged,
    )


def find_group(
    rest: list[WeightRef], measure, clears, everyone: tuple[float, float]
) -> tuple[list[WeightRef], tuple[float, float]]:
    """A small group among `rest` (most damaging first), all of which together clear the bar (`everyone`
    are their figures): grow it one weight at a time until it clears, then drop each member it does not
    need. `measure(group)` gives (zeroed, control) perplexities; `clears(zeroed, control)` is the bar."""
    group: list[WeightRef] = []
    for r in rest:
        group.append(r)
        if len(group) == len(rest):
            figures = everyone
            break
        if len(group) >= 2 and clears(*(figures := measure(group))):
            break
    for r in reversed(list(group)):  # least damaging first
        trial = [g for g in group if g != r]
        if len(trial) >= 2 and clears(*(smaller := measure(trial))):
            group, figures = trial, smaller
    return group, figures


def finite(value: float) -> float | None:
    """A perplexity to store: None when the loss was not finite (the record names it in `diverged`)."""
    return value if math.isfinite(value) else None
