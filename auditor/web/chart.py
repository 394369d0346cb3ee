"""The model page's charts as SVG, drawn at build time (no script, no library, no network).

The profile: two lines on a log scale, the largest |input| and the largest |output| of each layer's down
projection. The layers holding super weights are shaded: the output spike that marks a super activation
stands out.

Quantization: perplexity over the original's (log scale) of the model quantized by round-to-nearest at each
block size of one bit width, plainly, with the super weights kept, and with the other outliers clipped too.
Colours and strokes are presentation attributes, not CSS: the chart draws the same without the stylesheet
(an SVG's default fill is black, which turns a line chart into blobs).
"""

from __future__ import annotations

import math

from markupsafe import escape

from ..records import LayerProfile

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44
INPUT, OUTPUT, GRID, MUTED, MARKED = "#0b5cad", "#cf222e", "#d0d7de", "#57606a", "#f4b400"
TEXT = 'font-family="system-ui, sans-serif" font-size="12"'


def profile_svg(profile: list[LayerProfile], marked: set[int], title: str) -> str:
    """The chart's SVG markup, or "" when there is nothing to draw."""
    points = [(p.layer, p.max_input, p.max_output) for p in profile]
    values = [v for _, i, o in points for v in (i, o) if v is not None and v > 0]
    if not points or not values:
        return ""
    low = math.floor(math.log10(min(values)))
    high = max(math.ceil(math.log10(max(values))), low + 1)
    last = max(layer for layer, _, _ in points) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(layer: float) -> float:
        return LEFT + plot_w * layer / last

    def y(value: float) -> float:
        return TOP + plot_h * (high - math.log10(value)) / (high - low)

    def line(index: int, css: str, colour: str) -> str:
        coords = " ".join(f"{x(p[0]):.1f},{y(p[index]):.1f}" for p in points if p[index] is not None and p[index] > 0)
        return f'<polyline class="{css}" fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>'

    step = max(1, round(last / 16))
    band = max(plot_w / last * 0.8, 4)
    parts = [
        f'<svg class="profile" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(title)}</title>',
        '<desc id="chart-desc">Largest absolute input and output of each layer\'s MLP down projection, '
        "log scale; shaded layers hold super weights.</desc>",
    ]
    parts += [
        f'<rect class="marked" x="{x(layer) - band / 2:.1f}" y="{TOP}" width="{band:.1f}" height="{plot_h}" '
        f'fill="{MARKED}" fill-opacity="0.25"/>'
        for layer in sorted(marked)
    ]
    for exponent in range(low, high + 1):
        level = y(10**exponent)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{level:.1f}" y2="{level:.1f}" stroke="{GRID}"/>'
        )
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{level + 4:.1f}" text-anchor="end" fill="{MUTED}" {TEXT}>'
            f"1e{exponent}</text>"
        )
    for layer in range(0, last + 1, step):
        parts.append(
            f'<text class="tick" x="{x(layer):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" fill="{MUTED}" '
            f"{TEXT}>{layer}</text>"
        )
    parts += [
        line(1, "input", INPUT),
        line(2, "output", OUTPUT),
        f'<text class="axis" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" fill="{MUTED}" {TEXT}>'
        "layer</text>",
        f'<text class="legend input" x="{LEFT + 8}" y="{TOP + 12}" fill="{INPUT}" {TEXT}>max |input|</text>',
        f'<text class="legend output" x="{LEFT + 108}" y="{TOP + 12}" fill="{OUTPUT}" {TEXT}>max |output|</text>',
        "</svg>",
    ]
    return "".join(parts)


QUANT_HEIGHT, QUANT_TOP, QUANT_BOTTOM = 300, 30, 78
QUANT_SERIES = {  # kind -> colour, dash pattern: told apart without colour too
    "rtn": (OUTPUT, ""),
    "kept": (INPUT, "7 4"),
    "clipped": ("#116329", "2 3"),
}


def ratio_ticks(low: float, high: float) -> list[float]:
    """Round ratios between low and high for the y axis: 1-2-5 per decade over a wide range, even steps over
    a narrow one."""
    if high / low >= 10:
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ticks = [m * 10.0**e for e in decades for m in (1, 2, 5) if low <= m * 10.0**e <= high]
        return [t for t in ticks if math.log10(t).is_integer()] if len(ticks) > 7 else ticks
    raw = (high - low) / 4
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    return [round(k * step, 10) for k in range(first, math.floor(high / step + 1e-9) + 1)]


def quant_svg(labels: list[str], series: list[tuple[str, str, list[float | None]]], title: str, desc: str) -> str:
    """The quantization chart's SVG markup, or "" when there is nothing to draw. `series` holds (name, kind,
    ratio per label): kind one of QUANT_SERIES, a ratio inf where the loss was not finite (drawn as a
    triangle above the plot), None where not measured (left out)."""
    finite = [v for _, _, values in series for v in values if v is not None and 0 < v < math.inf]
    if len(labels) < 2 or not series or not any(v is not None for _, _, values in series for v in values):
        return ""
    low, high = min([*finite, 1.0]), max([*finite, 1.0])
    high = max(high, low * 1.1)
    ticks = ratio_ticks(low, high)
    bottom, top = math.log10(low), math.log10(high)
    pad = (top - bottom) * 0.06
    bottom, top = bottom - pad, top + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, QUANT_HEIGHT - QUANT_TOP - QUANT_BOTTOM
    axis = QUANT_HEIGHT - QUANT_BOTTOM

    def x(i: int) -> float:
        return LEFT + plot_w * (i + 0.5) / len(labels)

    def y(ratio: float) -> float:
        return QUANT_TOP + plot_h * (top - math.log10(ratio)) / (top - bottom)

    parts = [
        f'<svg class="quant" width="{WIDTH}" height="{QUANT_HEIGHT}" viewBox="0 0 {WIDTH} {QUANT_HEIGHT}" role="img" '
        f'aria-labelledby="quant-title quant-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="quant-title">{escape(title)}</title>',
        f'<desc id="quant-desc">{escape(desc)}</desc>',
    ]
    shown: list[float] = []
    for tick in sorted(ticks, key=lambda t: (t != 1, t)):  # the original's level first; no two labels overlap
        if all(abs(y(tick) - y(other)) >= 14 for other in shown):
            shown.append(tick)
    for tick in sorted(shown):
        level = y(tick)
        stroke = MUTED if tick == 1 else GRID
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{level:.1f}" y2="{level:.1f}" stroke="{stroke}"/>'
        )
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{level + 4:.1f}" text-anchor="end" fill="{MUTED}" {TEXT}>'
            f"×{tick:g}</text>"
        )
    for i, label in enumerate(labels):
        parts.append(
            f'<text class="tick" x="{x(i):.1f}" y="{axis + 16}" text-anchor="middle" fill="{MUTED}" {TEXT}>'
            f"{escape(label)}</text>"
        )
    offsets = {kind: (k - (len(series) - 1) / 2) * 9 for k, (_, kind, _) in enumerate(series)}
    for name, kind, values in series:
        colour, dash = QUANT_SERIES[kind]
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        run: list[str] = []
        runs = []
        for i, value in enumerate(values):
            if value is not None and 0 < value < math.inf:
                run.append(f"{x(i):.1f},{y(value):.1f}")
            else:
                runs.append(run)
                run = []
        runs.append(run)
        parts += [
            f'<polyline class="line {kind}" fill="none" stroke="{colour}" stroke-width="2"{dashes} '
            f'points="{" ".join(r)}"/>'
            for r in runs
            if len(r) > 1
        ]
        for i, value in enumerate(values):
            what = f"{escape(name)}, {escape(labels[i])}: "
            if value is None or value <= 0:
                continue
            if value == math.inf:
                tip_x, tip_y = x(i) + offsets[kind], QUANT_TOP - 14
                parts.append(
                    f'<path class="diverged {kind}" d="M{tip_x:.1f},{tip_y:.1f} l5,9 h-10 z" fill="{colour}">'
                    f"<title>{what}diverged (the loss was not finite)</title></path>"
                )
            else:
                parts.append(
                    f'<circle class="point {kind}" cx="{x(i):.1f}" cy="{y(value):.1f}" r="3.5" fill="{colour}">'
                    f"<title>{what}×{value:,.3g}</title></circle>"
                )
    parts.append(
        f'<text class="axis" x="{LEFT + plot_w / 2:.1f}" y="{axis + 34}" text-anchor="middle" fill="{MUTED}" {TEXT}>'
        "inputs per block (per-channel: one block per output row)</text>"
    )
    legend_y = QUANT_HEIGHT - 12
    at = float(LEFT)
    for name, kind, _ in series:
        colour, dash = QUANT_SERIES[kind]
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line class="legend {kind}" x1="{at:.1f}" x2="{at + 24:.1f}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
            f'stroke="{colour}" stroke-width="2"{dashes}/>'
        )
        parts.append(
            f'<text class="legend {kind}" x="{at + 30:.1f}" y="{legend_y}" fill="{colour}" {TEXT}>{escape(name)}</text>'
        )
        at += 40 + 6.5 * len(name)
    if any(v == math.inf for _, _, values in series for v in values):
        parts.append(
            f'<path class="legend diverged" d="M{at:.1f},{legend_y - 10} l5,9 h-10 z" fill="{MUTED}"/>'
            f'<text class="legend diverged" x="{at + 10:.1f}" y="{legend_y}" fill="{MUTED}" {TEXT}>diverged</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
