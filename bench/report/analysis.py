"""Where a trained model wins and loses on the test set: metrics by kind of test case.

A compressed table mostly fails in one way: items that share codewords (or a low-rank
structure) score alike, so a model can no longer single out the exact item of a repeat click.
Splitting the test cases shows it: the label already in the session (repeat) or not (new), the
label a hot item (top 20% by training popularity, the paper's split) or cold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ecbench.backbones import Backbone
from ecbench.bench.cpu import configure_cpu, restores_cpu_settings
from ecbench.bench.data.batching import Examples
from ecbench.bench.training.config import RunConfig
from ecbench.bench.errors import ConfigError
from ecbench.bench.evaluation.cases import test_case_groups
from ecbench.bench.evaluation.metrics import metrics_by_case, metrics_from_ranks, pessimistic_ranks
from ecbench.bench.records import now_iso, provenance, write_json
from ecbench.bench.evaluation.topk import top_k
from ecbench.bench.training.train import Prepared, load_dataset, prepare, scored_batches


TOP = 10


@dataclass(frozen=True)
class RankedTest:
    """A model's pessimistic rank of every test label, its top-`TOP` items for every case,
    and which of those are already in the case's session."""

    ranks: np.ndarray  # [n]
    top: np.ndarray  # [n, TOP] item ids, best first
    top_in_session: np.ndarray  # [n, TOP] bool


def rank_test(model: Backbone, examples: Examples, max_len: int) -> RankedTest:
    """The ranks of `ecbench.bench.training.train.evaluate_ranks` (the same scores) and the top items."""
    ranks, tops, in_session = [], [], []
    for batch, scores in scored_batches(model, examples, max_len):
        ranks.append(pessimistic_ranks(scores, batch.targets))
        top = top_k(scores, TOP, first=1)[1]  # column 0 is padding
        tops.append(top)
        in_session.append((top[:, :, None] == batch.items[:, None, :]).any(-1))
    return RankedTest(torch.cat(ranks).cpu().numpy(), torch.cat(tops).cpu().numpy(),
                      torch.cat(in_session).cpu().numpy())


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


@dataclass(frozen=True)
class RecordedRanking:
    """A recorded run's deployed model, re-loaded on the data it was trained on, and its
    ranking of that data's test set."""

    record_path: Path
    config: RunConfig
    record: dict[str, Any]
    model: Backbone
    prepared: Prepared
    ranked: RankedTest


@restores_cpu_settings
def rank_recorded(record_path: Path, *, data_root: str | None, workdir: Path, threads: int,
                  check: Callable[[Backbone], None] | None = None) -> RecordedRanking:
    """Load a recorded run's model (from WORKDIR/models) and its data (refused if it is not
    the data the record names, by checksum), and rank the test set with it. `check` may
    refuse the model first, before any data is read."""
    from ecbench.bench.deploy.recommender import load_trained

    configure_cpu(threads)
    config, record, model = load_trained(record_path, workdir)
    if check is not None:
        check(model)
    data = load_dataset(config.data, data_root)
    if data.checksum != record["dataset"]["checksum"]:
        raise ConfigError(f"record {record_path} was trained on other data than {data.name}")
    prepared = prepare(config, data)
    return RecordedRanking(record_path, config, record, model, prepared,
                           rank_test(model, prepared.test, config.max_len))


def write_analysis(kind: str, run: RecordedRanking, findings: dict[str, Any],
                   results_dir: Path, threads: int) -> tuple[dict[str, Any], Path]:
    """`findings` about `run`, with what it analysed (the record, and which training of it:
    its end and test metrics, as a rerun replaces a record) and its provenance, written to
    RESULTS/analysis/<kind>-<record>.json."""
    analysed = {"finished": run.record["finished"], "test": run.record["test"]}
    result = {"analysis": kind, "record": str(run.record_path), "key": run.record["key"],
              "analysed": analysed, "config": run.record["config"],
              "dataset": run.prepared.data.name, **findings,
              "provenance": provenance(threads), "date": now_iso()}
    path = Path(results_dir) / "analysis" / f"{kind}-{run.record_path.stem}.json"
    write_json(path, result)
    return result, path


def analyse_cases(record_path: Path, *, data_root: str | None, workdir: Path,
                  results_dir: Path, threads: int = 1) -> tuple[dict[str, Any], Path]:
    """Re-rank the test set with a recorded run's deployed model and break its metrics down
    by case; the overall metrics must equal the record's (a validation-selected run is tested
    at its selected model, so the same model gives the same ranks)."""
    run = rank_recorded(record_path, data_root=data_root, workdir=workdir, threads=threads)
    record = run.record
    if record["selection"]["on"] == "test":
        raise ConfigError(f"record {record_path} is a legacy select-on-test run: its test "
                          "metrics come from several epochs, not one model")
    ranks = run.ranked.ranks
    overall = metrics_from_ranks(ranks)
    groups = test_case_groups(run.prepared.test, run.prepared.hot_items, run.config.max_len)
    mismatch = {k: (v, record["test"][k]) for k, v in overall.items()
                if abs(v - record["test"][k]) > 1e-6}
    if mismatch:
        raise ConfigError(f"the model of {record_path} does not reproduce its recorded test "
                          f"metrics: {mismatch}")
    return write_analysis("cases", run, {
        "test": overall, "test_by_case": metrics_by_case(ranks, groups),
        "missed_top": missed_top(run.ranked, groups, run.prepared.hot_items)},
        results_dir, threads)
