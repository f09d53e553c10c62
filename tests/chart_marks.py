"""Read a chart's marks back from its matplotlib figure: bar heights, line points, error bars
and the text of its SVG, each by the labels a reader sees."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

SVG = "{http://www.w3.org/2000/svg}"


def _x_labels(figure: Figure) -> list[str]:
    return [label.get_text() for label in figure.axes[0].get_xticklabels()]


def bars(figure: Figure) -> dict[tuple[str, str], float]:
    """(category, series) -> the bar's height."""
    axes, labels = figure.axes[0], _x_labels(figure)
    return {(labels[round(patch.get_x() + patch.get_width() / 2)], container.get_label()):
            patch.get_height()
            for container in axes.containers if isinstance(container, BarContainer)
            for patch in container}


def points(figure: Figure) -> dict[tuple[str, str], float]:
    """(series, x label) -> the point's value, for every line in the legend."""
    axes, labels = figure.axes[0], _x_labels(figure)
    handles, names = axes.get_legend_handles_labels()
    return {(name, labels[round(x)]): y for line, name in zip(handles, names)
            for x, y in zip(line.get_xdata(), line.get_ydata())}


def error_bars(figure: Figure) -> list[tuple[str, float, float]]:
    """(x label, value, error) of every error bar drawn, by x label and value; the numbers
    rounded to 6 decimals, to compare with the records' exactly."""
    labels, found = _x_labels(figure), []
    for container in figure.axes[0].containers:
        if isinstance(container, ErrorbarContainer):
            assert container.has_yerr and not container.has_xerr
            for (x, low), (_, high) in container.lines[2][0].get_segments():
                found.append((labels[round(x)], round((low + high) / 2, 6),
                              round((high - low) / 2, 6)))
    return sorted(found)


def svg_text(svg: bytes) -> list[str]:
    """The text of every <text> element of an SVG (which must parse as XML)."""
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
