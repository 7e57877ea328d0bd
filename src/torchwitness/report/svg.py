"""Charts as inline SVG, written by hand: a few dozen elements, no plotting library, no scripts.

Every data point is a ``<circle class="pt">`` carrying the seq of its record, so the chart itself cites.

>>> from torchwitness.report.model import Chart, Series
>>> svg = chart_svg(Chart("loss", "step", "loss", [Series("train", [(0, 1.0), (1, 0.5)], [3, 4])]))
>>> svg.count('class="pt"')
2
"""

from __future__ import annotations

import math
from html import escape

from torchwitness.report.model import Chart, fmt

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
W, H = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 84


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        lo, hi = lo - 0.5 if lo else -1.0, hi + 0.5 if hi else 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def bounds(chart: Chart) -> tuple[float, float, float, float]:
    xs = [x for s in chart.series for x, _ in s.points]
    ys = [y for s in chart.series for _, y in s.points]
    for s in chart.series:
        ys += list(s.lows or []) + list(s.highs or [])
    if chart.style == "interval":
        ys.append(0.0)  # "no change" must be on the axis of a difference
    return min(xs), max(xs), min(ys), max(ys)


def chart_svg(chart: Chart) -> str:
    """The chart as a standalone ``<svg>`` element."""
    if not any(s.points for s in chart.series):
        return ""
    x0, x1, y0, y1 = bounds(chart)
    xt, yt = nice_ticks(x0, x1), nice_ticks(y0, y1)
    if chart.style == "interval":
        xt = [float(i) for i in range(len(chart.categories or []))]
        xt = [-0.5, *xt, len(xt) - 0.5]
    xa, xb, ya, yb = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - xa) / ((xb - xa) or 1) * pw

    def py(y: float) -> float:
        return TOP + ph - (y - ya) / ((yb - ya) or 1) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
           f'role="img" aria-label="{escape(chart.title)}">',
           f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
           f'{escape(chart.title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in yt:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
                   f'<text x="{LEFT - 4}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="10">{fmt(t, 3)}</text>')
    if chart.style == "interval":
        for i, name in enumerate(chart.categories or []):
            out.append(f'<text x="{px(i):.1f}" y="{TOP + ph + 14}" text-anchor="middle" font-size="10">'
                       f'{escape(name)}</text>')
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(0):.1f}" y2="{py(0):.1f}" stroke="#555" '
                   f'stroke-dasharray="4 3"/>')
    else:
        for t in xt:
            out.append(f'<text x="{px(t):.1f}" y="{TOP + ph + 14}" text-anchor="middle" font-size="10">'
                       f'{fmt(t, 3)}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{TOP + ph + 30}" text-anchor="middle" font-size="11">'
               f'{escape(chart.x_label)}</text>'
               f'<text transform="translate(14 {TOP + ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">'
               f'{escape(chart.y_label)}</text>')
    for i, s in enumerate(chart.series):
        colour = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        if chart.style == "line" and len(s.points) > 1:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        for j, ((x, y), seq) in enumerate(zip(s.points, s.seqs, strict=False)):
            if s.lows and s.highs:
                out.append(f'<line class="ci" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(s.lows[j]):.1f}" '
                           f'y2="{py(s.highs[j]):.1f}" stroke="{colour}" stroke-width="1.5"/>')
            out.append(f'<circle class="pt" data-seq="{seq}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" '
                       f'fill="{colour}"><title>{escape(s.label)}: {fmt(y)} (record {seq})</title></circle>')
        lx = LEFT + (i % 3) * 190
        ly = TOP + ph + 50 + (i // 3) * 12
        out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
                   f'<text x="{lx + 14}" y="{ly - 4}" font-size="10">{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)
