"""The paper's figures with matplotlib: a mark per number, an error bar where seeds spread,
written as SVG and PDF with the same bytes every time."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from chart_marks import bars, error_bars, points, svg_text
from matplotlib.image import AxesImage
from paper_records import distilled, student

from ecbench.bench.report.figures import fig3, fig4, fig6
from ecbench.bench.report.plots import bar_chart, figure_bytes, figure_files, heatmap, line_chart

SQRT2 = round(math.sqrt(2), 6)  # the sample standard deviation of two seeds 2 apart


def _bars():
    return bar_chart("Fig. 3 <&>", ["Stu-base", "Student"],
                     {"HR@10": [17.4, 17.5], "NDCG@10": [12.9, None]}, "percent",
                     errors={"HR@10": [0.5, None], "NDCG@10": [0.25, 3.0]})


def test_a_bar_per_value_and_an_error_bar_where_one_is_given():
    figure = _bars()
    assert bars(figure) == {("Stu-base", "HR@10"): 17.4, ("Student", "HR@10"): 17.5,
                            ("Stu-base", "NDCG@10"): 12.9}  # None draws no bar
    # no error bar without a value or an error (Student's NDCG@10 has an error but no bar)
    assert error_bars(figure) == [("Stu-base", 12.9, 0.25), ("Stu-base", 17.4, 0.5)]
    assert figure.axes[0].get_ylim()[0] == 0  # bars stand on zero
    assert figure.axes[0].get_ylabel() == "percent"


def test_a_line_chart_has_a_point_per_value_and_skips_missing_ones():
    figure = line_chart("Fig. 4", ["32", "128", "256"], {"M=4": [17.8, None, 22.5],
                                                         "M=3": [None, 20.0, 21.0]},
                        "HR@10 (%)", "K", errors={"M=4": [None, None, 1.5]})
    assert points(figure) == {("M=4", "32"): 17.8, ("M=4", "256"): 22.5,
                              ("M=3", "128"): 20.0, ("M=3", "256"): 21.0}
    assert error_bars(figure) == [("256", 22.5, 1.5)]
    axes = figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("K", "HR@10 (%)")
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["M=4", "M=3"]


def test_a_chart_without_errors_draws_no_error_bars():
    assert error_bars(line_chart("t", ["1", "2"], {"a": [1.0, 2.0]}, "y", "x")) == []
    assert error_bars(bar_chart("t", ["a"], {"b": [1.0]}, "y")) == []


def test_a_heatmap_cell_per_codeword_darkest_where_most_items():
    usage = [[1, 5, 9], [3, 3, 3]]
    figure = heatmap("usage", usage, ["codebook 1", "codebook 2"], ["0", "1", "2"], "items")
    image = next(a for a in figure.axes[0].get_images() if isinstance(a, AxesImage))
    np.testing.assert_array_equal(image.get_array(), usage)
    assert (image.norm.vmin, image.norm.vmax) == (1, 9)  # white the fewest, darkest the most
    brightness = {v: sum(image.cmap(image.norm(v))[:3]) for v in (1, 3, 5, 9)}
    assert brightness[1] > brightness[3] > brightness[5] > brightness[9]
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["codebook 1", "codebook 2"]
    assert figure.axes[1].get_ylabel() == "items"  # the colour bar


def test_the_svg_is_xml_with_the_charts_text_and_the_pdf_a_pdf():
    files = figure_files("fig3-tmall", _bars())
    assert list(files) == ["fig3-tmall.svg", "fig3-tmall.pdf"]
    text = svg_text(files["fig3-tmall.svg"])
    assert {"HR@10", "NDCG@10", "Stu-base", "Student", "percent", "Fig. 3 <&>"} <= set(text)
    assert files["fig3-tmall.pdf"].startswith(b"%PDF-")
    assert b"/CreationDate" not in files["fig3-tmall.pdf"]
    assert b"<dc:date>" not in files["fig3-tmall.svg"]


def test_the_same_input_gives_the_same_bytes_whatever_was_saved_before():
    figure = _bars()
    svg, pdf = figure_bytes(figure, "svg"), figure_bytes(figure, "pdf")
    assert figure_bytes(figure, "svg") == svg  # saving the PDF in between moves nothing
    assert figure_bytes(figure, "pdf") == pdf
    assert figure_files("x", _bars()) == {"x.svg": svg, "x.pdf": pdf}  # a figure drawn anew
    with pytest.raises(ValueError, match="png"):
        figure_bytes(figure, "png")


def test_fig3_draws_a_seeds_spread_as_an_error_bar():
    bases = [student(20.0, 10.0, seed=0), student(22.0, 10.0, seed=1)]
    records = [*bases, distilled(bases[1], 24.0, 12.0)]
    figure = fig3(records)["fig3-tmall"]
    assert bars(figure) == pytest.approx({("Stu-base", "HR@10"): 21.0, ("Stu-base", "NDCG@10"): 21.0,
                                          ("Student", "HR@10"): 24.0, ("Student", "NDCG@10"): 24.0})
    # the Stu-base's two seeds have a sample standard deviation; the one-seed Student none
    assert error_bars(figure) == [("Stu-base", 21.0, SQRT2)] * 2


def test_fig4_a_line_per_m_with_the_seeds_mean_and_spread():
    def shape(test: float, m: int, k: int, seed: int = 0) -> dict:
        return student(test, 10.0, seed=seed, compressor_options={"M": m, "K": k, "eta": 0.8})

    records = [shape(17.0, 4, 32), shape(19.0, 4, 32, seed=1), shape(22.0, 4, 256),
               shape(20.0, 3, 256)]
    figures = fig4(records)
    assert list(figures) == ["fig4-tmall-hr10", "fig4-tmall-ndcg10"]
    figure = figures["fig4-tmall-hr10"]
    assert points(figure) == pytest.approx({("M=3", "256"): 20.0, ("M=4", "32"): 18.0,
                                            ("M=4", "256"): 22.0})
    assert error_bars(figure) == [("32", 18.0, SQRT2)]


def test_fig6_a_heatmap_per_code_analysis():
    analysis = {"dataset": "tmall", "key": "k", "config": student(1.0, 1.0)["config"],
                "codes": {"M": 2, "K": 3, "codeword_usage": [[1, 2, 3], [4, 5, 6]]}}
    figure = fig6([analysis])["fig6-tmall-k"]
    np.testing.assert_array_equal(figure.axes[0].get_images()[0].get_array(),
                                  [[1, 2, 3], [4, 5, 6]])
    assert any(t.startswith("Fig. 6 codeword usage, tmall") for t in
               svg_text(figure_bytes(figure, "svg")))  # the title


def test_tables_write_each_figure_as_svg_and_pdf_and_remove_stale_ones(tmp_path):
    from ecbench.bench.report.all_tables import write_all

    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    (results / "figures").mkdir()
    for name in ("fig3-gone.svg", "fig3-gone.pdf", "notes.txt"):
        (results / "figures" / name).write_text("stale")
    for r in (student(17.0, 12.0, seed=0), student(19.0, 12.0, seed=1)):
        (results / "runs" / f"{r['key']}.json").write_text(json.dumps(r))
    write_all(results)
    names = {p.name for p in (results / "figures").iterdir()}
    assert names == {f"{stem}.{fmt}" for stem in ("fig3-tmall", "fig4-tmall-hr10",
                                                  "fig4-tmall-ndcg10") for fmt in ("svg", "pdf")
                     } | {"notes.txt"}  # only figures of both kinds are the command's to remove
    first = {name: (results / "figures" / name).read_bytes() for name in names}
    write_all(results)
    assert {name: (results / "figures" / name).read_bytes() for name in names} == first
    assert "Stu-base" in svg_text(first["fig3-tmall.svg"])
