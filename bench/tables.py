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
