"""Tables rendered from run records: pure functions of the records, nothing else."""

from __future__ import annotations

from typing import Any, Iterable

from tabulate import tabulate

RUN_METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR@20")


def run_rows(records: Iterable[dict[str, Any]]) -> list[list[Any]]:
    """One row per record: what ran, how it was selected, its test metrics and its cost."""
    rows = []
    for r in sorted(records, key=lambda r: (r["dataset"]["name"], r["config"]["backbone"],
                                            r["config"]["compressor"], r["seed"])):
        sel = r["selection"]
        storage = r["size"]["item_storage"]
        rows.append([
            r["dataset"]["name"], r["config"]["backbone"], r["config"]["compressor"], r["seed"],
            f"{sel['on']} ({sel['epoch']}/{sel['epochs_run']})"
            + (" + refit" if sel.get("refit") else ""),
            *(r["test"][m] for m in RUN_METRICS),
            storage["byte_ratio"], r["timing"]["train_seconds_per_epoch_median"],
            (r["provenance"]["git"]["commit"] or "?")[:8],
        ])
    return rows


def runs_table(records: Iterable[dict[str, Any]], fmt: str = "github") -> str:
    headers = ["data", "backbone", "compressor", "seed", "selected on (epoch)", *RUN_METRICS,
               "byte ratio", "s/epoch", "commit"]
    return tabulate(run_rows(records), headers=headers, floatfmt=".2f", tablefmt=fmt)


# The paper's Table 5: seconds per 100 sessions on a (virtual) Pixel 2 with PyTorch Mobile.
PAPER_TABLE5_SECONDS: dict[str, dict[str, float]] = {
    "GRU4Rec": {"tmall": 0.417, "retailrocket": 0.093},
    "NARM": {"tmall": 0.264, "retailrocket": 0.096},
    "STAMP": {"tmall": 0.175, "retailrocket": 0.094},
    "SR-GNN": {"tmall": 0.310, "retailrocket": 0.192},
    "OD-Rec": {"tmall": 0.169, "retailrocket": 0.081},
    "New Student": {"tmall": 0.021, "retailrocket": 0.012},
}
STUDENT = "New Student"


def paper_model(backbone: str, compressor: str) -> str:
    """The paper's name for a (backbone, compressor) pair: baselines are dense, OD-Rec is
    SASRec+sttd, the new student SASRec+ccode; anything else keeps its own name."""
    key = "".join(ch for ch in backbone.lower() if ch.isalnum())
    if compressor == "full":
        names = {"gru4rec": "GRU4Rec", "narm": "NARM", "stamp": "STAMP", "srgnn": "SR-GNN",
                 "sasrec": "SASRec (teacher)"}
        return names.get(key, f"{backbone} (full)")
    if key == "sasrec" and compressor in ("sttd", "ccode"):
        return "OD-Rec" if compressor == "sttd" else STUDENT
    return f"{backbone}+{compressor}"


def latency_cells(records: Iterable[dict[str, Any]], runtime: str, batch: int
                  ) -> dict[tuple[str, str], float]:
    """(model, dataset) -> ms per `batch` sessions, end to end; the latest record wins."""
    cells: dict[tuple[str, str], tuple[str, float]] = {}
    for record in records:
        dataset = record["dataset"]["name"]
        for model in record["models"]:
            timing = model["runtimes"].get(runtime, {}).get("batches", {}).get(str(batch))
            if not timing:
                continue
            name = paper_model(model["config"]["backbone"], model["config"]["compressor"])
            key = (name, dataset)
            if key not in cells or record["date"] >= cells[key][0]:
                cells[key] = (record["date"], timing["end_to_end"]["median_ms"])
    return {key: ms for key, (_, ms) in cells.items()}


def table5(records: Iterable[dict[str, Any]], runtime: str = "eager", batch: int = 100,
           fmt: str = "github") -> str:
    """Table 5's layout: models x datasets, ms per 100 sessions, ours beside the paper's, and
    each model's time over the new student's (the paper's "8x faster than OD-Rec")."""
    cells = latency_cells(records, runtime, batch)
    scale = 100 / batch  # ms per 100 sessions
    datasets = sorted({d for _, d in cells} | {"tmall", "retailrocket"})
    order = list(PAPER_TABLE5_SECONDS) + sorted({m for m, _ in cells} - set(PAPER_TABLE5_SECONDS))
    headers = ["model"]
    for d in datasets:
        headers += [f"{d} ours", f"{d} paper", f"{d} ours / student", f"{d} paper / student"]
    rows = []
    for model in order:
        row: list[Any] = [model]
        for d in datasets:
            ours, ours_student = cells.get((model, d)), cells.get((STUDENT, d))
            paper = PAPER_TABLE5_SECONDS.get(model, {}).get(d)
            paper_student = PAPER_TABLE5_SECONDS[STUDENT].get(d)
            row += [None if ours is None else ours * scale,
                    None if paper is None else 1e3 * paper,
                    None if ours is None or not ours_student else ours / ours_student,
                    None if paper is None or not paper_student else paper / paper_student]
        if any(v is not None for v in row[1:]):
            rows.append(row)
    title = (f"ms per 100 sessions ({runtime}, batch {batch}, one thread; paper: Pixel 2 "
             "emulator, PyTorch Mobile)")
    return title + "\n\n" + tabulate(rows, headers=headers, floatfmt=".2f", tablefmt=fmt,
                                     missingval="-")
