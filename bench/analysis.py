"""Where a trained model wins and loses on the test set: metrics by kind of test case.

A compressed table mostly fails in one way: items that share codewords (or a low-rank
structure) score alike, so a model can no longer single out the exact item of a repeat click.
Splitting the test cases shows it: the label already in the session (repeat) or not (new), the
label a hot item (top 20% by training popularity, the paper's split) or cold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backbones import Backbone
from bench.batching import Examples
from bench.errors import ConfigError
from bench.metrics import metrics_by_case, metrics_from_ranks, pessimistic_ranks
from bench.records import now_iso, provenance, write_json
from bench.topk import top_k
from bench.train import EVAL_BATCH_SIZE, Prepared, load_dataset, prepare


def test_case_groups(prepared: Prepared, max_len: int) -> dict[str, np.ndarray]:
    """Boolean masks over the test cases: repeat / new label, hot / cold label."""
    test = prepared.test
    repeat = test.target_in_prefix(max_len)
    hot = prepared.hot_items[test.targets]
    return {"repeat": repeat, "new": ~repeat, "hot_label": hot, "cold_label": ~hot}


TOP = 10


@dataclass(frozen=True)
class RankedTest:
    """A model's pessimistic rank of every test label, its top-`TOP` items for every case,
    and which of those are already in the case's session."""

    ranks: np.ndarray  # [n]
    top: np.ndarray  # [n, TOP] item ids, best first
    top_in_session: np.ndarray  # [n, TOP] bool


def rank_test(model: Backbone, examples: Examples, max_len: int) -> RankedTest:
    """The ranks of `bench.train.evaluate_ranks` (the same scores) and the top items."""
    model.eval()
    ranks, tops, in_session = [], [], []
    with torch.no_grad(), model.compressor.shared_weight():
        for batch in examples.batches(EVAL_BATCH_SIZE, max_len):
            scores = model.score(batch.items, batch.lengths)
            ranks.append(pessimistic_ranks(scores, batch.targets))
            top = top_k(scores[:, 1:], TOP)[1] + 1  # column 0 is padding
            tops.append(top)
            in_session.append((top[:, :, None] == batch.items[:, None, :]).any(-1))
    return RankedTest(torch.cat(ranks).numpy(), torch.cat(tops).numpy(),
                      torch.cat(in_session).numpy())


def missed_top(ranked: RankedTest, groups: dict[str, np.ndarray], hot_items: np.ndarray
               ) -> dict[str, dict[str, float]]:
    """What a model ranks above the labels it misses (rank > TOP), per case group: the share
    of those top items already in the session, and the share that are hot items."""
    missed = ranked.ranks > TOP
    out = {}
    for name, mask in groups.items():
        cases = mask & missed
        if cases.any():
            out[name] = {"missed_cases": int(cases.sum()),
                         "in_session": float(100.0 * ranked.top_in_session[cases].mean()),
                         "hot": float(100.0 * hot_items[ranked.top[cases]].mean())}
    return out


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
    ranked = rank_test(model, prepared.test, config.max_len)
    ranks = ranked.ranks
    overall = metrics_from_ranks(ranks)
    groups = test_case_groups(prepared, config.max_len)
    mismatch = {k: (v, record["test"][k]) for k, v in overall.items()
                if abs(v - record["test"][k]) > 1e-6}
    if mismatch:
        raise ConfigError(f"the model of {record_path} does not reproduce its recorded test "
                          f"metrics: {mismatch}")
    result = {"analysis": "cases", "record": str(record_path), "key": record["key"],
              "config": record["config"], "dataset": data.name, "test": overall,
              "test_by_case": metrics_by_case(ranks, groups),
              "missed_top": missed_top(ranked, groups, prepared.hot_items),
              "provenance": provenance(threads), "date": now_iso()}
    path = Path(results_dir) / "analysis" / f"cases-{record_path.stem}.json"
    write_json(path, result)
    return result, path
