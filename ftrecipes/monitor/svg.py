"""Inline SVG line charts for report.html: no plotting library, no files, opens anywhere."""

from __future__ import annotations

import html
import math

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / count))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= count:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, y_label: str,
               width: int = 640, height: int = 260) -> str:
    """An SVG chart of one or more (x, y) series; empty series are skipped."""
    series = {k: [(x, y) for x, y in v if math.isfinite(y)] for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    esc = html.escape
    if not series:
        return f'<p class="empty">{esc(title)}: no data</p>'
    xs = [x for v in series.values() for x, _ in v]
    ys = [y for v in series.values() for _, y in v]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 60, 12, 28, 36
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f'<svg class="chart" role="img" aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f'<text x="{left}" y="18" font-size="14" font-weight="bold">{esc(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{py(t) + 4:.1f}" font-size="10" text-anchor="end">{t:.4g}</text>')
    for t in _ticks(x0, x1):
        out.append(f'<text x="{px(t):.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">{t:.4g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 4}" font-size="11" text-anchor="middle">step</text>'
               f'<text x="12" y="{top + ph / 2}" font-size="11" transform="rotate(-90 12 {top + ph / 2})" '
               f'text-anchor="middle">{esc(y_label)}</text>')
    for i, (name, points) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline class="series" data-name="{esc(name)}" fill="none" stroke="{color}" '
                   f'stroke-width="1.8" points="{path}"/>')
        if len(points) == 1:
            out.append(f'<circle cx="{px(points[0][0]):.1f}" cy="{py(points[0][1]):.1f}" r="3" fill="{color}"/>')
        out.append(f'<text x="{left + pw - 4}" y="{top + 14 + 14 * i}" font-size="11" text-anchor="end" '
                   f'fill="{color}">{esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)
