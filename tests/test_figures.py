"""The paper's figures as SVG: well-formed, one mark per number, every value traceable."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from ecbench.bench.report.svg import bar_chart, heatmap, line_chart, nice_ceiling

SVG = "{http://www.w3.org/2000/svg}"


def _marks(svg: str, tag: str) -> dict[str, ET.Element]:
    """The marks of `tag` that carry a title, by title."""
    root = ET.fromstring(svg)
    return {mark.find(f"{SVG}title").text: mark for mark in root.iter(f"{SVG}{tag}")
            if mark.find(f"{SVG}title") is not None}


def test_a_bar_per_value_its_height_proportional_and_its_value_in_its_title():
    svg = bar_chart("T <&>", ["Stu-base", "Student"], {"HR@10": [17.4, 17.5],
                                                       "NDCG@10": [12.9, None]}, "percent", "%")
    bars = _marks(svg, "rect")
    assert set(bars) == {"Stu-base HR@10: 17.40%", "Student HR@10: 17.50%",
                         "Stu-base NDCG@10: 12.90%"}  # None draws nothing
    heights = {t: float(b.get("height")) for t, b in bars.items()}
    assert heights["Student HR@10: 17.50%"] / heights["Stu-base NDCG@10: 12.90%"] == \
        pytest.approx(17.5 / 12.9, rel=1e-2)
    assert "T &lt;&amp;&gt;" in svg  # text is escaped


def test_a_line_chart_has_a_point_per_value_and_skips_missing_ones():
    svg = line_chart("Fig. 4", ["32", "128", "256"], {"M=4": [17.8, None, 22.5],
                                                      "M=3": [None, 20.0, 21.0]},
                     "HR@10 (%)", "K")
    points = _marks(svg, "circle")
    assert set(points) == {"M=4, K 32: 17.80", "M=4, K 256: 22.50", "M=3, K 128: 20.00",
                           "M=3, K 256: 21.00"}
    ys = {t: float(p.get("cy")) for t, p in points.items()}
    assert ys["M=4, K 256: 22.50"] < ys["M=3, K 256: 21.00"]  # higher value, higher on screen
    assert len(ET.fromstring(svg).findall(f"{SVG}polyline")) == 2


def test_a_heatmap_cell_per_codeword_darkest_where_most_items():
    usage = [[1, 5, 9], [3, 3, 3]]
    svg = heatmap("usage", usage, ["codebook 1", "codebook 2"], ["0", "1", "2"])
    cells = _marks(svg, "rect")
    assert len(cells) == 6 and cells["codebook 1, 2: 9"].get("fill") == "#08306b"
    assert cells["codebook 1, 0: 1"].get("fill") == "#ffffff"
    brightness = {t: sum(int(c.get("fill")[i:i + 2], 16) for i in (1, 3, 5))
                  for t, c in cells.items()}
    assert brightness["codebook 1, 1: 5"] < brightness["codebook 2, 0: 3"]


@pytest.mark.parametrize("value, top", [(17.5, 20), (0.3, 0.5), (26.7, 50), (100, 100),
                                        (0.0, 1.0)])
def test_the_axis_tops_at_a_round_number(value, top):
    assert nice_ceiling(value) == pytest.approx(top)


def test_numbers_in_titles_are_the_records_numbers_not_rounded_twice():
    svg = bar_chart("t", ["a"], {"HR@10": [26.655]}, "percent")
    assert re.search(r"<title>a HR@10: 26\.66?</title>", svg)
