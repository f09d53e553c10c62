"""The chart kinds the paper's figures need (grouped bars, lines, a heatmap), drawn with
matplotlib and written as SVG and PDF.

Each chart is a pure function from numbers to a `matplotlib.figure.Figure` on the Agg canvas,
never pyplot's global state. `figure_files` turns a figure into the bytes of its `.svg` and
`.pdf`, identical for identical input (a fixed SVG hash salt, no dates in the metadata, the
font matplotlib ships), so a figure is rebuilt from records the same way every time. A point
with several seeds carries its spread as an error bar (`errors`: one standard deviation);
the exact numbers are in the matching table.
"""

from __future__ import annotations

import textwrap
from contextlib import contextmanager
from io import BytesIO
from typing import Any, Iterator, Mapping, Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Okabe-Ito: distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
FORMATS = ("svg", "pdf")
CREATOR = "ecbench (matplotlib)"
# what every figure is drawn and saved under: the bundled font (no system font can change a
# figure), text kept as text in the SVG, TrueType fonts in the PDF, fixed SVG ids
RC: dict[str, Any] = {
    "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "font.size": 9,
    "figure.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "axes.grid.axis": "y", "grid.color": "#dddddd", "axes.axisbelow": True,
    "svg.fonttype": "none", "svg.hashsalt": "ecbench", "pdf.fonttype": 42,
    "savefig.dpi": 100, "figure.dpi": 100,
}
METADATA = {"svg": {"Date": None, "Creator": CREATOR},
            "pdf": {"CreationDate": None, "ModDate": None, "Producer": CREATOR,
                    "Creator": CREATOR}}
Series = Mapping[str, Sequence[float | None]]


@contextmanager
def style() -> Iterator[None]:
    """matplotlib's settings for drawing and saving a figure (`RC`), restored afterwards."""
    with matplotlib.rc_context(RC):
        yield


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _laid_out(figure: Figure) -> Figure:
    """`figure` laid out once (on the Agg canvas) and its layout kept: the constrained layout
    otherwise starts each save from the last one's positions, and the bytes drift."""
    figure.draw_without_rendering()
    figure.set_layout_engine("none")
    return figure


def _title(figure: Figure, text: str, width: float) -> None:
    """The title over the whole figure (the legend beside the plot included), wrapped to its
    width (about 0.09 inch a bold character)."""
    figure.suptitle(textwrap.fill(text, max(40, int(width / 0.09))), fontweight="bold")


def _legend(axes: Axes, names: Sequence[str]) -> None:
    """The series' legend beside the plot, level with its top."""
    if names:
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                    frameon=False)


def _finished(figure: Figure, axes: Axes, title: str, width: float, names: Sequence[str],
              ylabel: str, xlabel: str | None = None) -> Figure:
    """A chart's common end: the value axis from 0, its labels, the title, the legend, and
    the layout fixed."""
    axes.set_ylim(bottom=0)
    if xlabel is not None:
        axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    _title(figure, title, width)
    _legend(axes, names)
    return _laid_out(figure)


def _legend_width(names: Sequence[str]) -> float:
    """Inches the legend beside the plot takes (about 0.07 a character at 9 points)."""
    return 0.7 + 0.07 * max(map(len, names), default=0)


def _spread(values: Sequence[float | None], errors: Sequence[float | None] | None
            ) -> tuple[list[int], list[float], list[float]]:
    """The positions, values and errors of the points that have both."""
    if errors is None:
        return [], [], []
    kept = [(i, v, e) for i, (v, e) in enumerate(zip(values, errors))
            if v is not None and e is not None]
    return [i for i, _, _ in kept], [v for _, v, _ in kept], [e for _, _, e in kept]


def bar_chart(title: str, categories: Sequence[str], series: Series, ylabel: str,
              errors: Series | None = None) -> Figure:
    """Grouped bars: one group per category, one bar per series (None: no bar); `errors`
    (same shape, None: no bar) draws an error bar on a bar."""
    names = list(series)
    longest = max(map(len, categories), default=0)
    # a slot per category wide enough for its bars and, slanted, for its label
    slot = max(0.35 * max(1, len(names)), 0.05 * longest)
    width = min(14.0, max(4.5, 1.0 + slot * len(categories))) + _legend_width(names)
    with style():
        figure = _figure(width, 3.6)
        axes = figure.add_subplot()
        step = 0.8 / max(1, len(names))
        for s, name in enumerate(names):
            colour = PALETTE[s % len(PALETTE)]
            offset = -0.4 + step * (s + 0.5)
            drawn = [(c, v) for c, v in enumerate(series[name]) if v is not None]
            axes.bar([c + offset for c, _ in drawn], [v for _, v in drawn], step * 0.92,
                     color=colour, label=name)
            at, values, spread = _spread(series[name], (errors or {}).get(name))
            if at:
                axes.errorbar([c + offset for c in at], values, yerr=spread, fmt="none",
                              ecolor="#333333", elinewidth=1, capsize=3)
        axes.set_xticks(range(len(categories)), list(categories),
                        rotation=20 if longest > 9 else 0, ha="right" if longest > 9 else "center")
        return _finished(figure, axes, title, width, names, ylabel)


def line_chart(title: str, x_labels: Sequence[str], series: Series, ylabel: str, xlabel: str,
               errors: Series | None = None) -> Figure:
    """One line per series over categorical x positions; a None is skipped (the line joins
    the points on either side); `errors` (same shape, None: no bar) draws error bars."""
    names = list(series)
    width = 4.8 + _legend_width(names)
    with style():
        figure = _figure(width, 3.6)
        axes = figure.add_subplot()
        for s, name in enumerate(names):
            colour = PALETTE[s % len(PALETTE)]
            drawn = [(i, v) for i, v in enumerate(series[name]) if v is not None]
            axes.plot([i for i, _ in drawn], [v for _, v in drawn], color=colour, marker="o",
                      markersize=4, linewidth=1.5, label=name)
            at, values, spread = _spread(series[name], (errors or {}).get(name))
            if at:
                axes.errorbar(at, values, yerr=spread, fmt="none", ecolor=colour, elinewidth=1,
                              capsize=3)
        axes.set_xticks(range(len(x_labels)), list(x_labels))
        axes.set_xlim(-0.5, len(x_labels) - 0.5)
        return _finished(figure, axes, title, width, names, ylabel, xlabel)


def scatter_chart(title: str, series: Mapping[str, Sequence[tuple[float, float, float | None]]],
                  marks: Sequence[tuple[str, float, float]], xlabel: str, ylabel: str
                  ) -> Figure:
    """Points on a log-x axis: one line per series through its (x, y, error) points (an error
    bar where the error is not None), and `marks` (name, x, y) as labelled black points."""
    names = list(series) + [name for name, _, _ in marks]
    width = 5.4 + _legend_width(names)
    with style():
        figure = _figure(width, 3.8)
        axes = figure.add_subplot()
        for s, (name, points) in enumerate(series.items()):
            colour = PALETTE[s % len(PALETTE)]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            axes.plot(xs, ys, color=colour, marker="o", markersize=4, linewidth=1.2, label=name)
            bars = [(x, y, e) for x, y, e in points if e is not None]
            if bars:
                axes.errorbar([b[0] for b in bars], [b[1] for b in bars],
                              yerr=[b[2] for b in bars], fmt="none", ecolor=colour,
                              elinewidth=1, capsize=3)
        for m, (name, x, y) in enumerate(marks):
            axes.plot([x], [y], linestyle="none", marker="sDv^<>"[m % 6], markersize=6,
                      color="#000000", label=name)
        axes.set_xscale("log")
        return _finished(figure, axes, title, width, names, ylabel, xlabel)


def heatmap(title: str, matrix: Sequence[Sequence[float]], row_labels: Sequence[str],
            column_labels: Sequence[str], value_label: str = "") -> Figure:
    """A cell per value, white (the smallest) to dark blue (the largest), with a colour bar."""
    columns, rows = len(column_labels), len(row_labels)
    width = min(16.0, max(5.0, 1.6 + 0.22 * columns))
    height = min(10.0, max(2.4, 1.6 + 0.3 * rows))
    with style():
        figure = _figure(width, height)
        axes = figure.add_subplot()
        axes.grid(False)
        image = axes.imshow(matrix, cmap="Blues", aspect="auto", interpolation="nearest")
        every = 1 if columns <= 40 else 8
        axes.set_xticks(range(0, columns, every), list(column_labels)[::every])
        axes.set_yticks(range(rows), list(row_labels))
        axes.tick_params(length=0)
        for spine in axes.spines.values():
            spine.set_visible(False)
        _title(figure, title, width)
        figure.colorbar(image, ax=axes, label=value_label, shrink=0.9)
        return _laid_out(figure)


def figure_bytes(figure: Figure, fmt: str) -> bytes:
    """`figure` as `fmt` (svg, pdf): the same bytes for the same figure, every time."""
    if fmt not in METADATA:
        raise ValueError(f"no {fmt!r} output: one of {', '.join(FORMATS)}")
    out = BytesIO()
    with style():
        figure.savefig(out, format=fmt, metadata=METADATA[fmt])
    return out.getvalue()


def figure_files(stem: str, figure: Figure) -> dict[str, bytes]:
    """File name -> bytes: `stem.svg` and `stem.pdf`."""
    return {f"{stem}.{fmt}": figure_bytes(figure, fmt) for fmt in FORMATS}
