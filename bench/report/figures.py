"""The paper's figures, drawn from the stored records with matplotlib (`plots`; pure functions,
like the tables): each a `Figure` by file stem, written as STEM.svg and STEM.pdf. A point
averaged over several seeds carries their standard deviation as an error bar.

- Fig. 3, the ablation: test HR@10 and NDCG@10 of Stu-base, each ablation and the full student,
  from the same rows as `ecbench table ablation`;
- Fig. 4, the influence of M and K: one line per M over K, from Table 4's runs;
- Fig. 5, the mixup weight eta, and the curves of beta and gamma its Section 6.6 describes
  (`ecbench.bench.report.sensitivity`);
- Fig. 6, codeword usage: a heatmap (codebooks by codewords) per code analysis.
"""

from __future__ import annotations

from typing import Any, Iterable

from matplotlib.figure import Figure

from ecbench.bench.report.paper_tables import (DATASETS, ablation_rows, mean_test, spread_test,
                                               table4_cells)
from ecbench.bench.report.plots import bar_chart, heatmap, line_chart
from ecbench.bench.report.tables import variant

Record = dict[str, Any]
FIG_METRICS = ("HR@10", "NDCG@10")


def _slug(metric: str) -> str:
    return metric.replace("@", "").lower()


def fig3(records: Iterable[Record]) -> dict[str, Figure]:
    """fig3-DATASET for each dataset with ablation rows; a Stu-base whose record a rerun has
    replaced labels its family's bars "(earlier)"."""
    rows = ablation_rows(records)
    figures = {}
    for dataset in DATASETS:
        mine = [r for r in rows if r.dataset == dataset and not r.variant]  # the paper's method
        if not mine:
            continue
        categories = [r.name + (" (earlier)" if r.earlier_training else "") for r in mine]
        series = {m: [r.mean(m) for r in mine] for m in FIG_METRICS}
        spreads = {m: [spread_test(r.runs, m) for r in mine] for m in FIG_METRICS}
        figures[f"fig3-{dataset}"] = bar_chart(
            f"Fig. 3 ablation, {dataset}: the deployed student, test metrics", categories,
            series, "percent", errors=spreads)
    return figures


def fig4(records: Iterable[Record]) -> dict[str, Figure]:
    """fig4-DATASET-METRIC: one line per M over the K values recorded."""
    cells = table4_cells(records)
    figures = {}
    for dataset in DATASETS:
        shapes = {codes: runs for ((codes, training), d), runs in cells.items()
                  if d == dataset and ", ours" not in training}  # the paper's method only
        if not shapes:
            continue
        ks = sorted({k for _, k in shapes})
        ms = sorted({m for m, _ in shapes})
        for metric in FIG_METRICS:
            series = {f"M={m}": [mean_test(shapes[m, k], metric) if (m, k) in shapes else None
                                  for k in ks] for m in ms}
            spreads = {f"M={m}": [spread_test(shapes[m, k], metric) if (m, k) in shapes
                                  else None for k in ks] for m in ms}
            figures[f"fig4-{dataset}-{_slug(metric)}"] = line_chart(
                f"Fig. 4 M and K, {dataset}: test {metric} by K, vectors per codebook",
                [str(k) for k in ks], series, f"{metric} (%)", "K", errors=spreads)
    return figures


def fig6(code_analyses: Iterable[Record]) -> dict[str, Figure]:
    """fig6-DATASET-KEY: how many items use each codeword, a row per codebook."""
    figures = {}
    for analysis in code_analyses:
        usage = analysis["codes"]["codeword_usage"]
        shape = f"M={analysis['codes']['M']}, K={analysis['codes']['K']}"
        figures[f"fig6-{analysis['dataset']}-{analysis['key']}"] = heatmap(
            f"Fig. 6 codeword usage, {analysis['dataset']} {variant(analysis['config'])} "
            f"({shape}; record {analysis['key']}): items per codeword", usage,
            [f"codebook {i + 1}" for i in range(len(usage))],
            [str(k) for k in range(len(usage[0]))], "items")
    return figures


def render_figures(runs: list[Record], code_analyses: list[Record]) -> dict[str, Figure]:
    """File stem -> figure, for every figure the records support (`plots.figure_files` gives
    its .svg and .pdf)."""
    from ecbench.bench.report.sensitivity import sensitivity_figures

    return {**fig3(runs), **fig4(runs), **sensitivity_figures(runs), **fig6(code_analyses)}
