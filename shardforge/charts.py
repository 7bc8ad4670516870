"""The report's charts: matplotlib figures rendered to inline SVG.

Each function returns one ``<svg>`` element (no XML declaration, text kept as text) that
renders the same in any browser and needs no JavaScript or network. matplotlib's
object-oriented API is used (``Figure``, never ``pyplot``), so nothing touches a display
or global figure state. Count axes get integer ticks only; long category labels are
wrapped and turned, never cut. Empty input draws a frame saying "no data"; the report
leaves out a chart whose series has no value at all (``has_values``).

Each bar carries an SVG id ``bar-<i>-<value>``, so tests (and people reading the source)
can find what was drawn.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["COLOR", "bar_chart", "has_values", "heatmap", "histogram", "line_chart"]

COLOR = "#3b6ea8"
PALETTE = [COLOR, "#d1603d", "#5a9e4b", "#8c5fb2"]
SIZE = (5.2, 2.6)  # inches at 100 dpi: the 520 x 260 px panels of the report's grid
_RC = {"svg.fonttype": "none", "svg.hashsalt": "shardforge", "font.size": 8,
       "axes.spines.top": False, "axes.spines.right": False}


def has_values(values: Sequence[float | None]) -> bool:
    """Whether a series has at least one finite value to draw."""
    return any(v is not None and math.isfinite(v) for v in values)


def _figure(title: str) -> tuple[Figure, object]:
    fig = Figure(figsize=SIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, loc="left", fontsize=9)
    return fig, ax


def _svg(fig: Figure) -> str:
    out = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(out, format="svg", metadata=dict.fromkeys(("Creator", "Date", "Format", "Type")))
    text = out.getvalue()
    return text[text.index("<svg"):]


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", color="#999", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _wrap(label: str, width: int = 14) -> str:
    return "\n".join(textwrap.wrap(label, width, break_long_words=True)) or label


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str,
              y_label: str = "") -> str:
    """One bar per label; integer ticks when every value is an integer."""
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(title)
        if not labels:
            _no_data(ax)
            return _svg(fig)
        bars = ax.bar(range(len(labels)), values, color=COLOR)
        for i, (bar, value) in enumerate(zip(bars, values, strict=True)):
            bar.set_gid(f"bar-{i}-{value:g}")
        turn = len(labels) > 6 or max(len(str(label)) for label in labels) > 10
        ax.set_xticks(range(len(labels)), [_wrap(str(label)) for label in labels],
                      rotation=35 if turn else 0, ha="right" if turn else "center")
        if all(float(v).is_integer() for v in values):
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(y_label)
        return _svg(fig)


def histogram(values: Sequence[float], *, bins: int = 20, title: str, x_label: str = "") -> str:
    """Counts of ``values`` in ``bins`` equal-width bins (integer count axis)."""
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(title)
        if not len(values):
            _no_data(ax)
            return _svg(fig)
        counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
        bars = ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=COLOR,
                      edgecolor="white", linewidth=0.5)
        for i, (bar, count) in enumerate(zip(bars, counts, strict=True)):
            bar.set_gid(f"bar-{i}-{int(count)}")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x_label)
        ax.set_ylabel("count")
        return _svg(fig)


def line_chart(xs: Sequence[float], series: dict[str, Sequence[float | None]], *, title: str,
               x_label: str = "", y_label: str = "") -> str:
    """One line per named series over shared ``xs`` (None/NaN points are skipped)."""
    with matplotlib.rc_context(_RC):
        fig, ax = _figure(title)
        drawn = False
        for i, (name, ys) in enumerate(series.items()):
            points = [(x, y) for x, y in zip(xs, ys, strict=True)
                      if y is not None and math.isfinite(y)]
            if points:
                px, py = zip(*points, strict=True)
                ax.plot(px, py, color=PALETTE[i % len(PALETTE)], linewidth=1.6, label=name,
                        marker="o" if len(points) < 3 else None, markersize=3)
                drawn = True
        if not drawn:
            _no_data(ax)
            return _svg(fig)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.legend(loc="best", frameon=False)
        return _svg(fig)


def heatmap(values: Sequence[Sequence[float]], *, title: str, square: float | None = None,
            note: str = "") -> str:
    """A 2-d map (rows top to bottom) with a colour bar; e.g. an effective receptive field.

    Args:
        values: rows of equal length (None/NaN drawn blank).
        square: side, in map pixels, of a centred square to outline (a theoretical
            receptive field); drawn clipped to the map, left out when None.
        note: a line under the map (what the square is, the units).
    """
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(3.4, 3.0), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        ax.set_title(title, loc="left", fontsize=9)
        grid = np.asarray([[np.nan if v is None else v for v in row] for row in values],
                          dtype=np.float64)
        if grid.ndim != 2 or not np.isfinite(grid).any():
            _no_data(ax)
            return _svg(fig)
        image = ax.imshow(grid, cmap="magma", interpolation="nearest")
        image.set_gid("heatmap")
        fig.colorbar(image, ax=ax, shrink=0.8)
        if square is not None:
            from matplotlib.patches import Rectangle

            h, w = grid.shape
            cy, cx = (h - 1) / 2, (w - 1) / 2
            ax.add_patch(Rectangle((cx - square / 2, cy - square / 2), square, square,
                                   fill=False, edgecolor="#5ad1ff", linewidth=1.2,
                                   clip_on=True, gid="square"))
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        if note:
            ax.set_xlabel(note, fontsize=7)
        return _svg(fig)
