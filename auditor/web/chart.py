"""The per-layer profile as an SVG line chart, drawn at build time (no script, no library, no network).

Two lines on a log scale: the largest |input| and the largest |output| of each layer's down projection.
The layers holding super weights are shaded: the output spike that marks a super activation stands out.
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
