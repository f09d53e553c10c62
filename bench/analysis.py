"""Where a trained model wins and loses on the test set: metrics by kind of test case.

A compressed table mostly fails in one way: items that share codewords (or a low-rank
structure) score alike, so a model can no longer single out the exact item of a repeat click.
Splitting the test cases shows it: the label already in the session (repeat) or not (new), the
label a hot item (top 20% by training popularity, the paper's split) or cold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import ConfigError
from bench.metrics import metrics_by_case, metrics_from_ranks
from bench.records import now_iso, provenance, write_json
from bench.train import Prepared, evaluate_ranks, load_dataset, prepare


def test_case_groups(prepared: Prepared, max_len: int) -> dict[str, np.ndarray]:
    """Boolean masks over the test cases: repeat / new label, hot / cold label."""
    test = prepared.test
    repeat = test.target_in_prefix(max_len)
    hot = prepared.hot_items[test.targets]
    return {"repeat": repeat, "new": ~repeat, "hot_label": hot, "cold_label": ~hot}


def analyse_cases(record_path: Path, *, data_root: str | None, workdir: Path,
                  results_dir: Path, threads: int = 1) -> tuple[dict[str, Any], Path]:
    """Re-rank the test set with a recorded run's deployed model and break its metrics down
    by case; the overall metrics must equal the record's (a validation-selected run is tested
    at its selected model, so the same model gives the same ranks)."""
    from bench.cpu import configure_cpu
    from bench.deploy import load_trained

    configure_cpu(threads)
    config, record, model = load_trained(record_path, workdir)
    data = load_dataset(config.data, data_root)
    if data.checksum != record["dataset"]["checksum"]:
        raise ConfigError(f"record {record_path} was trained on other data than {data.name}")
    if record["selection"]["on"] == "test":
        raise ConfigError(f"record {record_path} is a legacy select-on-test run: its test "
                          "metrics come from several epochs, not one model")
    prepared = prepare(config, data)
    ranks = evaluate_ranks(model, prepared.test, config.max_len)
    overall = metrics_from_ranks(ranks)
    mismatch = {k: (v, record["test"][k]) for k, v in overall.items()
                if abs(v - record["test"][k]) > 1e-6}
    if mismatch:
        raise ConfigError(f"the model of {record_path} does not reproduce its recorded test "
                          f"metrics: {mismatch}")
    result = {"analysis": "cases", "record": str(record_path), "key": record["key"],
              "config": record["config"], "dataset": data.name, "test": overall,
              "test_by_case": metrics_by_case(ranks, test_case_groups(prepared, config.max_len)),
              "provenance": provenance(threads), "date": now_iso()}
    path = Path(results_dir) / "analysis" / f"cases-{record_path.stem}.json"
    write_json(path, result)
    return result, path
