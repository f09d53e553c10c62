"""The paper's hyperparameter analysis (Section 6.6): the distilled student's test metrics as
one distillation weight varies while the others keep the dataset's defaults. For the mixup
weight eta this is the paper's Fig. 5; for beta (the weight of L_con) and gamma (of L_soft),
the curves its text describes. Pure functions of the run records, like every table;
`bench/sweeps/eta-tmall.toml` and `bench/sweeps/kd-weights-tmall.toml` record them.

A curve is one setting of everything else: runs that differ in more than the weight (another
eta schedule, more distillation epochs) draw their own curve, and a point's seeds are averaged.
Each point also shows its mean validation score, the only fair way to pick a weight; the
paper's figures are test scores and give no numbers, so none stand beside ours.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable

from tabulate import tabulate

from ecbench.bench.training.config import distill_weights
from ecbench.bench.report.paper_tables import (DATASETS, ablation_of, at_paper_settings, mean_test,
                                               spread_test, student_ablation, validation_score)
from ecbench.bench.report.tables import settings_key, variant

if TYPE_CHECKING:  # matplotlib is imported only to draw
    from matplotlib.figure import Figure

Record = dict[str, Any]
WEIGHTS = {"eta": "the mixup weight eta (Fig. 5)", "beta": "the contrastive weight beta",
           "gamma": "the soft-target weight gamma"}
CURVE_METRICS = ("HR@10", "NDCG@10")
# dataset -> weight -> curve label (what else the runs share) -> weight value -> its seeds
Curves = dict[str, dict[str, dict[str, dict[float, list[Record]]]]]


def _at_default(config: dict[str, Any], weight: str) -> dict[str, Any]:
    """`config` with `weight` set back to its dataset default."""
    default = distill_weights(config["data"])[weight]
    return {**config, "distill": {**config["distill"], weight: default}}


def curve_of(record: Record, weight: str) -> str | None:
    """The curve of `weight` that `record` is a point of, or None: a distilled student at the
    paper's settings and codes whose other weights are the dataset's defaults. A curve is every
    setting but the seed and `weight`, as canonical JSON (`curve_label` names it). An eta of 0
    (Stu-w/o-m) is the eta curve's 0."""
    config = record["config"]
    if (not config.get("distill") or student_ablation(record) is None
            or not at_paper_settings(record)):
        return None
    defaults = distill_weights(config["data"])
    if any(config["distill"][w] != defaults[w] for w in defaults if w != weight):
        return None
    at_default = _at_default(config, weight)
    if ablation_of(at_default) != "Student":
        return None
    return settings_key(at_default)


def curve_label(curve: str) -> str:
    """What sets a curve apart, in words: the run's variant and its distillation epochs."""
    config = json.loads(curve)
    epochs = config["distill"].get("epochs")
    return variant(config) + (f", {epochs} distillation epochs" if epochs else "")


def _labelled(curves: dict[str, dict[float, list[Record]]]) -> dict[str, dict[float, list[Record]]]:
    """Curves by label; curves that differ only where the label does not look (say the
    patience) are told apart by a short hash of their settings."""
    labels = {curve: curve_label(curve) for curve in curves}
    shared = {label for label, count in Counter(labels.values()).items() if count > 1}
    return {labels[curve] + (f" [{hashlib.sha256(curve.encode()).hexdigest()[:6]}]"
                             if labels[curve] in shared else ""): points
            for curve, points in curves.items()}


def sensitivity_curves(records: Iterable[Record]) -> Curves:
    """Every curve with at least two weight values, by dataset and weight, by label."""
    found: Curves = {}
    records = list(records)
    for weight in WEIGHTS:
        for record in records:
            curve = curve_of(record, weight)
            if curve is not None:
                value = float(record["config"]["distill"][weight])
                (found.setdefault(record["dataset"]["name"], {}).setdefault(weight, {})
                 .setdefault(curve, {}).setdefault(value, []).append(record))
    kept = {dataset: {w: _labelled({c: points for c, points in curves.items() if len(points) > 1})
                      for w, curves in by_weight.items()}
            for dataset, by_weight in found.items()}
    return {dataset: by_weight for dataset, by_weight in kept.items() if any(by_weight.values())}


def sensitivity_rows(curves: Curves) -> list[list[Any]]:
    rows = []
    for dataset in [d for d in DATASETS if d in curves] + sorted(set(curves) - set(DATASETS)):
        for weight in WEIGHTS:
            default = distill_weights(dataset)[weight]
            for label, points in sorted(curves[dataset].get(weight, {}).items()):
                for value, runs in sorted(points.items()):
                    rows.append([dataset, weight + (" (default)" if value == default else ""),
                                 value, label, len(runs), validation_score(runs),
                                 *(mean_test(runs, m) for m in CURVE_METRICS),
                                 " ".join(r["key"] for r in runs)])
    return rows


def sensitivity_table(records: Iterable[Record], fmt: str = "github") -> str:
    """The curves as a table: a row per weight value, its seeds' mean validation score (each
    run's selection metric) and test metrics in percent."""
    rows = sensitivity_rows(sensitivity_curves(records))
    intro = ("Hyperparameter analysis (the paper's Section 6.6; Fig. 5 is eta): the distilled "
             "student's test metrics in percent as one distillation weight varies, the others "
             "at the dataset's defaults; validation is each run's selection score, by which "
             "a weight may be chosen.")
    if not rows:
        return (intro + "\n\nNo curve is recorded yet (two or more values of one weight): "
                "ecbench sweep bench/sweeps/eta-tmall.toml, bench/sweeps/kd-weights-tmall.toml.")
    headers = ["data", "weight", "value", "curve", "seeds", "validation",
               *(f"test {m}" for m in CURVE_METRICS), "records"]
    floatfmt = ("", "", "g", "", "", ".2f", *(".2f" for _ in CURVE_METRICS), "")
    return intro + "\n\n" + tabulate(rows, headers=headers, floatfmt=floatfmt, tablefmt=fmt)


def sensitivity_figures(records: Iterable[Record]) -> dict[str, Figure]:
    """fig5-DATASET (eta) and sensitivity-DATASET-WEIGHT (beta, gamma), by file stem: test
    HR@10 and NDCG@10 over the weight's values, a line per metric and curve, an error bar (one
    standard deviation) where a point has several seeds."""
    from ecbench.bench.report.plots import line_chart

    figures = {}
    for dataset, by_weight in sensitivity_curves(records).items():
        for weight, curves in by_weight.items():
            if not curves:
                continue
            values = sorted({v for points in curves.values() for v in points})
            lines = {(f"{metric} ({label})" if len(curves) > 1 else metric): (points, metric)
                     for label, points in sorted(curves.items()) for metric in CURVE_METRICS}
            series = {name: [mean_test(points[v], metric) if v in points else None
                             for v in values] for name, (points, metric) in lines.items()}
            spreads = {name: [spread_test(points[v], metric) if v in points else None
                              for v in values] for name, (points, metric) in lines.items()}
            name = f"fig5-{dataset}" if weight == "eta" else f"sensitivity-{dataset}-{weight}"
            figures[name] = line_chart(
                f"{dataset}: the distilled student's test metrics by {WEIGHTS[weight]}",
                [f"{v:g}" for v in values], series, "percent", weight, errors=spreads)
    return figures
