"""Beyond the paper: repeat clicks. Each model with a repeat head (`--repeat-bonus`,
`--repeat-mixture`: `backbones.repeat`) beside the same model without one, and the model-free
session recency ranking beside them, on our honest protocol, split into repeat and new cases.

Almost half of Tmall's next clicks return to an item of the session; ranking the session's own
items by recency alone beats every model of the paper's Table 3 there. A pure function of the
run records: a cell is a model of Table 3 (or the student's Stu-base) at the paper's settings
with a repeat head, the configuration with the best mean validation score, seeds averaged,
beside the runs of the same settings without the head.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from tabulate import tabulate

from ecbench.bench.training.config import repeat_head
from ecbench.bench.report.paper_tables import (DATASETS, at_paper_settings, best_on_validation,
                                student_ablation, table3_model)
from ecbench.bench.report.tables import settings_key

Record = dict[str, Any]
BASELINE = "session recency"
METRICS = ("HR@10", "NDCG@10")
CASES = ("repeat", "new")
HEADS = ("no", "bonus", "mixture")  # the table's rows per model: no head, then each head


def without_repeat(record: Record) -> Record:
    """The record as if its model had no repeat head (to place it by the paper's settings)."""
    return {**record, "config": {**record["config"], "repeat_bonus": None,
                                 "repeat_mixture": None}}


def repeat_model(record: Record) -> str | None:
    """Its row of Table 3, or Stu-base for the pretrained student of the paper's codes."""
    plain = without_repeat(record)
    if student_ablation(plain) == "Stu-base":
        return "Stu-base"
    return table3_model(plain)


def repeat_cells(records: Iterable[Record]) -> dict[tuple[str, str, str], list[Record]]:
    """(model, dataset, repeat head) -> seeds. For each head, the configuration with the best
    mean validation score; under "no", the runs of exactly its settings without the head (of
    the bonus's winner where both heads have one), so a row pair differs in the head alone."""
    placed = [r for r in records
              if repeat_model(r) is not None and at_paper_settings(without_repeat(r))]
    cells: dict[tuple[str, str, str], list[Record]] = {}
    for head in HEADS[1:]:
        groups: dict[tuple[str, str], list[Record]] = {}
        for record in placed:
            if repeat_head(record["config"]) == head:
                key = (repeat_model(record), record["dataset"]["name"])
                groups.setdefault(key, []).append(record)
        for (model, data), runs in groups.items():
            cells[model, data, head] = best_on_validation(runs)
    for (model, data, head), runs in list(cells.items()):
        if (model, data, "no") in cells:
            continue
        settings = settings_key(without_repeat(runs[0])["config"])
        plain = [r for r in placed if r["dataset"]["name"] == data
                 and settings_key(r["config"]) == settings]
        if plain:
            cells[model, data, "no"] = plain
    return cells


def recency_baseline(records: Iterable[Record], dataset: str) -> Record | None:
    """A record of `dataset` at the paper's settings holding the session recency baseline (the
    same in every such record: it depends on the test set and the session length only)."""
    for record in records:
        if (record["dataset"]["name"] == dataset and BASELINE in record.get("baselines", {})
                and at_paper_settings(without_repeat(record))):
            return record
    return None


def _row(dataset: str, model: str, head: str, seeds: str, test: list[dict[str, float]],
         cases: list[dict[str, Any]] | None) -> list[Any]:
    row: list[Any] = [dataset, model, head, seeds]
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
    recency ranking, then each model without and with each repeat head."""
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
            for head in HEADS:
                runs = cells.get((model, dataset, head))
                if runs:
                    rows.append(_row(dataset, model, head, str(len(runs)),
                                     [r["test"] for r in runs],
                                     [r.get("test_by_case") for r in runs]))
    sources = sorted(f"- {data} {model}, repeat head {head}: records "
                     + ", ".join(r["key"] for r in runs)
                     for (model, data, head), runs in cells.items())
    headers = ["data", "model", "repeat head", "seeds", *METRICS,
               "HR@10 repeat cases", "HR@10 new cases"]
    return ("Repeat clicks (beyond the paper): test metrics in percent, selected on validation, "
            "deployed table; the session recency ranking recommends the session's own items, "
            "the most recent first, and needs no model\n\n"
            + tabulate(rows, headers=headers, floatfmt=".2f", tablefmt=fmt, missingval="-")
            + ("\n\n" + "\n".join(sources) if sources else ""))
