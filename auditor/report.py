"""Human-readable text for an `AuditResult`: what the CLI prints without --json."""

from __future__ import annotations

import math

from .records import WEIGHT_VERDICT_LABELS, Ablation, AuditResult, Quantization

VERDICT_TEXT = {
    "confirmed": "confirmed: zeroing proves these super weights",
    "not_confirmed": "not confirmed: no candidate hurts the model more than its control, alone or in a group",
    "none_found": "none found: no down projection has a super-weight spike",
}


def number(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:,.{digits}f}" if abs(x) < 1e6 else f"{x:.3e}"


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def render(result: AuditResult) -> str:
    info, det = result.info, result.detection
    where = f"{info.model}" + (f" @ {info.revision}" if info.revision else "") + f" ({info.loaded_from})"
    lines = [
        where,
        f"{info.architecture} ({info.model_type}), {info.num_layers} layers, "
        f"{info.num_parameters / 1e6:,.1f}M parameters, {info.dtype} on {info.device}",
        "",
    ]
    n = len(det.super_weights)
    lines.append(f"{n} candidate{'s' if n != 1 else ''} found in {det.passes} forward pass(es)")
    if n:
        header = ["layer", "row", "col", "expert", "weight", "activation", "input", "out x", "in x", "share"]
        rows = [
            [
                str(w.layer),
                str(w.row),
                str(w.col),
                "-" if w.expert is None else str(w.expert),
                f"{w.value:.4g}",
                f"{w.activation:.4g}",
                f"{w.input_activation:.4g}",
                f"{w.output_ratio:,.0f}",
                f"{w.input_ratio:,.0f}",
                f"{w.share:.2f}",
            ]
            for w in det.super_weights
        ]
        lines += table(rows, header)
        lines += [f"  read it: {w.tensor}[{', '.join(map(str, w.index))}]" for w in det.super_weights]
    if det.truncated:
        lines.append(f"  (stopped at --max-super-weights {det.settings.max_super_weights}; spikes remain)")
    lines += ["", "Layer profile (largest |input| and |output| of each down projection):"]
    prof_rows = [
        [
            str(p.layer),
            f"{p.max_input:.4g}",
            str(p.input_channel),
            f"{p.max_output:.4g}",
            str(p.output_channel),
        ]
        for p in det.profile
    ]
    lines += table(prof_rows, ["layer", "max |in|", "channel", "max |out|", "channel"])
    if result.ablation is not None:
        lines += ["", *render_ablation(result.ablation)]
    if result.quantization is not None:
        lines += ["", *render_quantization(result.quantization)]
    return "\n".join(lines)


def render_quantization(q: Quantization) -> list[str]:
    """Perplexity under each RTN scheme, as a multiple of the original's: plain, super weights kept, and
    kept with the other outliers clipped."""
    held = ", ".join(r.label for r in q.held_out) or "none proven: plain RTN only"
    lines = [
        f"Round-to-nearest weight quantization (decoder linear layers{''.join(f', {p}' for p in q.settings.include)};"
        f" {q.tokens:,} tokens; super weights kept: {held}):"
    ]

    def times(value: float | None) -> str:
        return "diverged" if value is None else f"{number(value)} (x{number(value / q.perplexity_original)})"

    rows = []
    for r in q.rows:
        clipped = times(r.rtn_sw_clip) + ("" if r.clip_z is None else f" at z={r.clip_z:g}")
        rows.append([r.scheme.label, times(r.rtn), *([times(r.rtn_sw), clipped] if q.held_out else [])])
    header = ["scheme", "RTN", *(["RTN + SW kept", "RTN + SW kept + clip"] if q.held_out else [])]
    lines += table(rows, header)
    lines.append(f"  original: {number(q.perplexity_original)}; x: over the original (lower is better)")
    return lines


def render_ablation(a: Ablation) -> list[str]:
    windows = a.tokens // a.seq_len
    lines = [f"Ablation on {a.eval_text} ({a.tokens:,} tokens, {windows} window(s) of {a.seq_len}):"]

    def figure(name: str, value: float | None) -> list[str]:
        if value is None and name in a.diverged:
            return ["diverged", "unbounded"]
        return [number(value), "-" if value is None else f"x{number(value / a.perplexity_original)}"]

    if a.per_weight:
        screen = f"; screened first on {a.screen_tokens:,} tokens" if a.screen_tokens else ""
        lines.append(
            f"  each candidate zeroed alone, against its control (the largest other weight of its matrix){screen}:"
        )
        rows = []
        for w in a.per_weight:
            name = w.ref().label
            alone = figure(name, w.perplexity)
            if w.perplexity is None and w.screened is not None:
                alone = [number(w.screened), f"x{number(w.screened / a.screen_original)} (screen)"]
            rows.append(
                [
                    name + (f" expert {w.expert}" if w.expert is not None else ""),
                    *alone,
                    *figure(f"control of {name}", w.perplexity_control),
                    WEIGHT_VERDICT_LABELS[w.verdict],
                ]
            )
        lines += table(rows, ["weight", "zeroed", "vs original", "control", "vs original", "verdict"])
        if a.group_perplexity is not None or "group" in a.diverged:
            group = [w.ref().label for w in a.per_weight if w.verdict == "in_group"]
            lines.append(
                f"  in group ({', '.join(group)}): zeroed together {' '.join(figure('group', a.group_perplexity))}, "
                f"their controls {' '.join(figure('group control', a.group_control))}"
            )
    rows = [["original", number(a.perplexity_original), ""]]
    if a.verdict != "none_found":
        proven = any(w.verdict in ("super_weight", "in_group") for w in a.per_weight)
        which = "the super weights" if proven else "all candidates"
        lines.append(f"  {which} zeroed together, against as many of the largest other weights of their matrices:")
        rows.append(["zeroed together", *figure("ablated", a.perplexity_ablated)])
        control = f"control ({len(a.control_weights)} largest others zeroed)"
        rows.append([control, *figure("control", a.perplexity_control)])
    lines += table(rows, ["perplexity", "", "vs original"])[1:]
    lines += ["", f"Verdict: {VERDICT_TEXT[a.verdict]}"]
    if a.diverged:
        lines.append(f"  diverged (the loss was not finite, the model broke outright): {', '.join(a.diverged)}")
    if a.verdict != "none_found":
        lines.append(
            f"  (a super weight, alone or in a group, makes perplexity >= {a.min_damage:g} x original and "
            f">= {a.min_margin:g} x its control's)"
        )
    return lines
