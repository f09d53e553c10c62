"""Plain SVG charts (grouped bars, lines, a heatmap), with no plotting library.

Each chart is a pure function from numbers to SVG text, so a figure is rebuilt from records the
same way every time and diffs as text. Every mark carries a `<title>` with its exact value, so
a reader can trace a bar or a cell to its number (and a test can read it back).
"""

from __future__ import annotations

import math
from typing import Sequence
from xml.sax.saxutils import escape

# Okabe-Ito: distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
FONT = "font-family='sans-serif' font-size='12'"


class Canvas:
    """An SVG document built element by element."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._parts: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, fill: str, title: str = "") -> None:
        self._parts.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' "
                           f"fill='{fill}'>{_title(title)}</rect>")

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#000",
             dash: bool = False) -> None:
        style = " stroke-dasharray='3,3'" if dash else ""
        self._parts.append(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
                           f"stroke='{stroke}'{style}/>")

    def polyline(self, points: Sequence[tuple[float, float]], stroke: str) -> None:
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self._parts.append(f"<polyline points='{coords}' fill='none' stroke='{stroke}' "
                           "stroke-width='2'/>")

    def circle(self, x: float, y: float, fill: str, title: str = "") -> None:
        self._parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='{fill}'>"
                           f"{_title(title)}</circle>")

    def text(self, x: float, y: float, text: str, anchor: str = "middle", size: int = 12,
             rotate: bool = False, weight: str = "normal") -> None:
        turn = f" transform='rotate(-90 {x:.1f} {y:.1f})'" if rotate else ""
        self._parts.append(f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' "
                           f"font-size='{size}' font-weight='{weight}'{turn}>"
                           f"{escape(text)}</text>")

    def render(self) -> str:
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{self.width}' "
                f"height='{self.height}' viewBox='0 0 {self.width} {self.height}' {FONT}>"
                f"<rect width='100%' height='100%' fill='#fff'/>"
                + "".join(self._parts) + "</svg>\n")


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>" if text else ""


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (> 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


class _Axes:
    """A plot area with a y axis from 0 to a round top, ticks and grid lines."""

    LEFT, RIGHT, TOP, BOTTOM = 60, 150, 40, 70

    def __init__(self, canvas: Canvas, top_value: float, ylabel: str, title: str) -> None:
        self.canvas = canvas
        self.x0, self.x1 = self.LEFT, canvas.width - self.RIGHT
        self.y0, self.y1 = canvas.height - self.BOTTOM, self.TOP
        self.top = nice_ceiling(top_value)
        canvas.text(canvas.width / 2, 22, title, size=14, weight="bold")
        for i in range(6):
            value = self.top * i / 5
            y = self.y(value)
            canvas.line(self.x0, y, self.x1, y, stroke="#ddd")
            canvas.text(self.x0 - 6, y + 4, f"{value:g}", anchor="end", size=11)
        canvas.line(self.x0, self.y0, self.x1, self.y0)
        canvas.line(self.x0, self.y0, self.x0, self.y1)
        canvas.text(16, (self.y0 + self.y1) / 2, ylabel, rotate=True)

    def y(self, value: float) -> float:
        return self.y0 - (self.y0 - self.y1) * value / self.top

    def legend(self, names: Sequence[str], line: bool = False) -> None:
        for i, name in enumerate(names):
            y = self.y1 + 18 * i
            colour = PALETTE[i % len(PALETTE)]
            if line:
                self.canvas.line(self.x1 + 12, y + 5, self.x1 + 28, y + 5, stroke=colour)
            else:
                self.canvas.rect(self.x1 + 14, y, 12, 10, colour)
            self.canvas.text(self.x1 + 34, y + 10, name, anchor="start", size=11)


def _top(series: dict[str, Sequence[float | None]]) -> float:
    return max((v for values in series.values() for v in values if v is not None), default=1.0)


def bar_chart(title: str, categories: Sequence[str], series: dict[str, Sequence[float | None]],
              ylabel: str, unit: str = "") -> str:
    """Grouped bars: one group per category, one bar per series (None: no bar)."""
    # a slot per category wide enough for its bars and for the longest label (~7 px a letter)
    slot_width = max(45 * max(1, len(series)), 7 * max(map(len, categories), default=0) + 16)
    canvas = Canvas(max(480, _Axes.LEFT + _Axes.RIGHT + slot_width * len(categories)), 360)
    axes = _Axes(canvas, _top(series), ylabel, title)
    slot = (axes.x1 - axes.x0) / max(1, len(categories))
    bar = slot * 0.8 / max(1, len(series))
    for c, category in enumerate(categories):
        left = axes.x0 + c * slot + slot * 0.1
        for s, (name, values) in enumerate(series.items()):
            value = values[c]
            if value is None:
                continue
            y = axes.y(value)
            canvas.rect(left + s * bar, y, bar * 0.92, axes.y0 - y, PALETTE[s % len(PALETTE)],
                        f"{category} {name}: {value:.2f}{unit}")
        canvas.text(left + slot * 0.4, axes.y0 + 16, category, size=11)
    axes.legend(list(series))
    return canvas.render()


def line_chart(title: str, x_labels: Sequence[str], series: dict[str, Sequence[float | None]],
               ylabel: str, xlabel: str) -> str:
    """One line per series over categorical x positions; a None breaks no line, it is skipped."""
    canvas = Canvas(560, 360)
    axes = _Axes(canvas, _top(series), ylabel, title)
    step = (axes.x1 - axes.x0) / max(1, len(x_labels))
    xs = [axes.x0 + step * (i + 0.5) for i in range(len(x_labels))]
    for i, label in enumerate(x_labels):
        canvas.text(xs[i], axes.y0 + 16, label, size=11)
    canvas.text((axes.x0 + axes.x1) / 2, axes.y0 + 40, xlabel)
    for s, (name, values) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        points = [(xs[i], axes.y(v)) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            canvas.polyline(points, colour)
        for i, value in enumerate(values):
            if value is not None:
                canvas.circle(xs[i], axes.y(value), colour,
                              f"{name}, {xlabel} {x_labels[i]}: {value:.2f}")
    axes.legend(list(series), line=True)
    return canvas.render()


def heatmap(title: str, matrix: Sequence[Sequence[float]], row_labels: Sequence[str],
            column_labels: Sequence[str]) -> str:
    """A cell per value, white (the smallest) to dark blue (the largest), the value in its title."""
    cell = max(14, min(40, 900 // max(1, len(column_labels))))
    left, top = 90, 50
    canvas = Canvas(left + cell * len(column_labels) + 30, top + cell * len(row_labels) + 60)
    canvas.text(canvas.width / 2, 22, title, size=14, weight="bold")
    values = [v for row in matrix for v in row]
    low, high = min(values, default=0.0), max(values, default=1.0)
    for r, row in enumerate(matrix):
        canvas.text(left - 8, top + cell * (r + 0.5) + 4, row_labels[r], anchor="end", size=11)
        for c, value in enumerate(row):
            shade = 0.0 if high == low else (value - low) / (high - low)
            canvas.rect(left + c * cell, top + r * cell, cell - 1, cell - 1, _blue(shade),
                        f"{row_labels[r]}, {column_labels[c]}: {value:g}")
    for c, label in enumerate(column_labels):
        if len(column_labels) <= 40 or c % 8 == 0:
            canvas.text(left + cell * (c + 0.5), top + cell * len(row_labels) + 14, label,
                        size=10)
    canvas.text(left, canvas.height - 12, f"white {low:g}, darkest {high:g}", anchor="start",
                size=11)
    return canvas.render()


def _blue(shade: float) -> str:
    """From white (0) to #08306B (1)."""
    r, g, b = (round(255 + (end - 255) * shade) for end in (8, 48, 107))
    return f"#{r:02x}{g:02x}{b:02x}"

