"""Tiny inline-SVG charts for the HTML report: no JavaScript, no network, no plotting library.

Each function returns an ``<svg>`` string sized ``WIDTH x HEIGHT`` that renders the same in
any browser and in an email client. Values are drawn as given; empty input draws an empty
frame with "no data" so a report never breaks on a stage that did not run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "histogram", "line_chart"]

WIDTH, HEIGHT = 520, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 44  # margins: room for axis labels and the title
COLOR = "#3b6ea8"


def _frame(title: str, body: str, *, y_max: float, y_label: str = "") -> str:
    ticks = []
    for i in range(5):
        value = y_max * i / 4
        y = HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * i / 4
        ticks.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e3e3e3"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end" font-size="11">{_fmt(value)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
            f'font-family="sans-serif">'
            f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13" '
            f'font-weight="bold">{escape(title)}</text>{"".join(ticks)}'
            f'<text x="12" y="{TOP - 8}" font-size="11" fill="#555">{escape(y_label)}</text>'
            f'{body}</svg>')


def _fmt(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.3g}"


def _nice_max(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=0.0)
    if finite and all(float(v).is_integer() for v in finite) and top <= 4:
        return 4.0  # small counts: whole-number ticks 0..4 rather than 0.263 rows
    return top * 1.05 if top > 0 else 1.0


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str,
              y_label: str = "") -> str:
    """Vertical bars, one per label (labels are cut to 14 characters under the bars)."""
    if not values:
        return _frame(title, _no_data(), y_max=1.0)
    y_max = _nice_max(values)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / len(values)
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * max(value, 0) / y_max
        x = LEFT + i * step + step * 0.1
        bars.append(f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - h:.1f}" width="{step * 0.8:.1f}" '
                    f'height="{h:.1f}" fill="{COLOR}"><title>{escape(str(label))}: '
                    f'{value:g}</title></rect>'
                    f'<text x="{x + step * 0.4:.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="10" '
                    f'text-anchor="middle">{escape(_short(str(label), step))}</text>')
    return _frame(title, "".join(bars), y_max=y_max, y_label=y_label)


def histogram(values: Sequence[float], *, bins: int = 20, title: str, x_label: str = "") -> str:
    """Counts of ``values`` in ``bins`` equal-width bins, labelled by their lower edges."""
    if not values:
        return _frame(title, _no_data(), y_max=1.0)
    low, high = min(values), max(values)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - low) / width), bins - 1)] += 1
    labels = [_fmt(low + i * width) for i in range(bins)]
    return bar_chart(labels, counts, title=f"{title}" + (f" ({x_label})" if x_label else ""),
                     y_label="count")


def line_chart(xs: Sequence[float], series: dict[str, Sequence[float]], *, title: str,
               x_label: str = "", y_label: str = "") -> str:
    """One polyline per named series over shared ``xs`` (None/NaN points are skipped)."""
    points = {name: [(x, y) for x, y in zip(xs, ys, strict=True)
                     if y is not None and math.isfinite(y)] for name, ys in series.items()}
    if not xs or not any(points.values()):
        return _frame(title, _no_data(), y_max=1.0)
    y_max = _nice_max([y for pts in points.values() for _, y in pts])
    x_low, x_high = min(xs), max(xs)
    span = (x_high - x_low) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    palette = [COLOR, "#d1603d", "#5a9e4b", "#8c5fb2"]
    body = []
    for i, (name, pts) in enumerate(points.items()):
        coords = " ".join(f"{LEFT + plot_w * (x - x_low) / span:.1f},"
                          f"{HEIGHT - BOTTOM - plot_h * y / y_max:.1f}" for x, y in pts)
        color = palette[i % len(palette)]
        body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                     f'stroke-width="2"/><text x="{WIDTH - RIGHT - 4}" y="{TOP + 14 * (i + 1)}" '
                     f'text-anchor="end" font-size="11" fill="{color}">{escape(name)}</text>')
    body.append(f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="11">{_fmt(x_low)}</text>'
                f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" font-size="11" text-anchor="end">'
                f'{_fmt(x_high)}</text><text x="{WIDTH / 2}" y="{HEIGHT - 8}" font-size="11" '
                f'text-anchor="middle">{escape(x_label)}</text>')
    return _frame(title, "".join(body), y_max=y_max, y_label=y_label)


def _short(label: str, room: float) -> str:
    """Cuts a label to what fits under a bar ~``room`` pixels wide (~6 px a character)."""
    fits = max(int(room / 6), 3)
    return label if len(label) <= fits else label[: fits - 1] + "…"


def _no_data() -> str:
    return (f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#999" '
            f'font-size="13">no data</text>')
