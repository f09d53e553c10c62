"""Beyond the paper: repeat clicks. Each model with the repeat bonus (`--repeat-bonus`,
`backbones.repeat`) beside the same model without it, and the model-free session recency
ranking beside both, on our honest protocol, split into repeat and new test cases.

Almost half of Tmall's next clicks return to an item of the session; ranking the session's own
items by recency alone beats every model of the paper's Table 3 there. A pure function of the
run records: a cell is a model of Table 3 (or the student's Stu-base) at the paper's settings,
with or without the bonus, the configuration with the best mean validation score, seeds averaged.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from tabulate import tabulate

from bench.paper_tables import (DATASETS, at_paper_settings, best_on_validation,
                                student_ablation, table3_model)

Record = dict[str, Any]
BASELINE = "session recency"
METRICS = ("HR@10", "NDCG@10")
CASES = ("repeat", "new")


def without_bonus(record: Record) -> Record:
    """The record as if its model had no repeat bonus (to place it by the paper's settings)."""
    return {**record, "config": {**record["config"], "repeat_bonus": None}}


def repeat_model(record: Record) -> str | None:
    """Its row of Table 3, or Stu-base for the pretrained student of the paper's codes."""
    plain = without_bonus(record)
    if student_ablation(plain) == "Stu-base":
        return "Stu-base"
    return table3_model(plain)


def repeat_cells(records: Iterable[Record]) -> dict[tuple[str, str, bool], list[Record]]:
    """(model, dataset, with the bonus) -> the winning seeds, for every model that has a run
    with the bonus (its run without the bonus beside it, if any)."""
    candidates: dict[tuple[str, str, bool], list[Record]] = {}
    for record in records:
        model = repeat_model(record)
        if model is None or not at_paper_settings(without_bonus(record)):
            continue
        bonus = bool(record["config"].get("repeat_bonus"))
        candidates.setdefault((model, record["dataset"]["name"], bonus), []).append(record)
    with_bonus = {(model, data) for model, data, bonus in candidates if bonus}
    return {key: best_on_validation(runs) for key, runs in candidates.items()
            if key[:2] in with_bonus}


def recency_baseline(records: Iterable[Record], dataset: str) -> Record | None:
    """A record of `dataset` at the paper's settings holding the session recency baseline (the
    same in every such record: it depends on the test set and the session length only)."""
    for record in records:
        if (record["dataset"]["name"] == dataset and BASELINE in record.get("baselines", {})
                and at_paper_settings(without_bonus(record))):
            return record
    return None


def _row(dataset: str, model: str, bonus: str, seeds: str, test: list[dict[str, float]],
         cases: list[dict[str, Any]] | None) -> list[Any]:
    row: list[Any] = [dataset, model, bonus, seeds]
    row += [float(np.mean([t[m] for t in test])) for m in METRICS]
    for case in CASES:
        row.append(float(np.mean([c[case]["HR@10"] for c in cases]))
                   if cases and all(c and "HR@10" in c.get(case, {}) for c in cases) else None)
    return row


def baseline_row(dataset: str, source: Record) -> list[Any]:
    """The session recency ranking's row: it hits repeat cases only, so its HR@10 on them is
    its HR@10 over the repeat cases' share (from the source record's case split)."""
    metrics = source["baselines"][BASELINE]
    row = _row(dataset, BASELINE + " (no model)", "-", "-", [metrics], None)
    share = ((source.get("test_by_case") or {}).get("repeat") or {}).get("share")
    if share:
        row[-2:] = [100.0 * metrics["HR@10"] / share, 0.0]
    return row


def repeat_table(records: Iterable[Record], fmt: str = "github") -> str:
    """Test HR@10 and NDCG@10, and HR@10 on repeat and on new cases, per dataset: the session
    recency ranking, then each model without and with the bonus."""
    records = list(records)
    cells = repeat_cells(records)
    rows = []
    for dataset in DATASETS:
        models = sorted({model for model, data, _ in cells if data == dataset})
        if not models:
            continue
        source = recency_baseline(records, dataset)
        if source is not None:
            rows.append(baseline_row(dataset, source))
        for model in models:
            for bonus in (False, True):
                runs = cells.get((model, dataset, bonus))
                if runs:
                    rows.append(_row(dataset, model, "yes" if bonus else "no",
                                     str(len(runs)), [r["test"] for r in runs],
                                     [r.get("test_by_case") for r in runs]))
    sources = sorted(f"- {data} {model}{' with the bonus' if bonus else ''}: records "
                     + ", ".join(r["key"] for r in runs)
                     for (model, data, bonus), runs in cells.items())
    headers = ["data", "model", "repeat bonus", "seeds", *METRICS,
               "HR@10 repeat cases", "HR@10 new cases"]
    return ("Repeat clicks (beyond the paper): test metrics in percent, selected on validation, "
            "deployed table; the session recency ranking recommends the session's own items, "
            "the most recent first, and needs no model\n\n"
            + tabulate(rows, headers=headers, floatfmt=".2f", tablefmt=fmt, missingval="-")
            + ("\n\n" + "\n".join(sources) if sources else ""))
