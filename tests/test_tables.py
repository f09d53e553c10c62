"""Tables are pure functions of records: variants named, seeds aggregated."""

from __future__ import annotations

import copy
import re

import pytest

from ecbench.bench.report.tables import RUN_METRICS, run_rows, runs_table, seed_summary_rows, variant


def _record(seed: int, ndcg: float, **config) -> dict:
    base = {"data": "tmall", "backbone": "sasrec", "compressor": "ccode", "seed": seed,
            "compressor_options": {}, "ratio": None, "distill": None, "refit": None}
    base.update(config)
    return {"config": base, "seed": seed, "dataset": {"name": "tmall", "checksum": "c"},
            "selection": {"on": "validation", "epoch": 2, "epochs_run": 5},
            "test": {m: ndcg for m in RUN_METRICS},
            "size": {"item_storage": {"byte_ratio": 91.3}},
            "timing": {"train_seconds_per_epoch_median": 1.0},
            "provenance": {"git": {"commit": "abcdef0123"}}}


KD = {"contrastive": True, "soft": True, "bidirectional": True, "beta": 0.01, "gamma": 0.3,
      "eta": 0.8, "eta_schedule": "none", "temperature": 0.2, "teacher_table": "live",
      "reduction": "sum"}
# a distillation record from before the teacher table and the reduction were recorded
OLD_KD = {k: v for k, v in KD.items() if k not in ("teacher_table", "reduction")}


@pytest.mark.parametrize("config, expected", [
    ({}, "-"),
    ({"compressor_options": {"M": 3, "K": 256}}, "K=256, M=3"),
    ({"ratio": 30.0}, "ratio 30"),
    ({"distill": KD}, "KD"),
    ({"distill": {**KD, "bidirectional": False, "eta": 0.0}}, "KD w/o-b w/o-m"),
    ({"distill": {**KD, "eta_schedule": "linear"}}, "KD eta linear"),
    ({"distill": OLD_KD}, "KD, teacher table copied, KD mean"),
    ({"distill": {**KD, "teacher_table": "copy", "reduction": "mean"}},
     "KD, teacher table copied, KD mean"),
    ({"compressor_options": {"eta": 0.8, "eval_table": "mixed"}}, "eta=0.8, eval mixed (legacy)"),
    ({"refit": True}, "refit"),
    ({"select_on": "test"}, "paper protocol (legacy)"),
    ({"l2": 0.0}, "l2=0"),
    ({"backbone_options": {"layers": 1, "heads": 1, "dropout": 0.5}}, "-"),  # Tmall's preset
    ({"backbone_options": {"layers": 1, "heads": 1, "dropout": 0.0}}, "dropout=0"),
    ({"dropout_epochs": 1}, "dropout in 1 epoch(s)"),
    ({"backbone_options": {"layers": 1, "heads": 1, "dropout": 0.5, "ffn_residual": 4.0}},
     "ffn_residual=4"),
])
def test_variant_names_what_sets_a_run_apart(config, expected):
    assert variant(_record(0, 1.0, **config)["config"]) == expected


def test_seeds_of_one_config_become_one_row_with_mean_and_std():
    records = [_record(0, 20.0), _record(1, 22.0), _record(2, 24.0),
               _record(0, 30.0, distill=KD)]
    rows = seed_summary_rows(records)
    assert len(rows) == 2
    base = next(r for r in rows if r[3] == "-")
    assert base[5] == 3 and base[6] == "22.00 ± 2.00"
    kd = next(r for r in rows if r[3] == "KD")
    assert kd[5] == 1 and kd[6] == "30.00"
    assert len(run_rows(records)) == 4


def test_a_legacy_scored_run_shows_its_compressed_table_figures_in_a_row_beside():
    legacy = _record(0, 25.0, compressor_options={"eta": 0.8, "eval_table": "mixed"})
    legacy["test_compressed_table"] = {m: 15.0 for m in RUN_METRICS}
    rows = run_rows([legacy, _record(0, 18.0)])
    assert len(rows) == 3
    mixed, alone = (next(r for r in rows if r[3].startswith("eta=0.8") and r[6] == v)
                    for v in (25.0, 15.0))
    assert alone[3] == "eta=0.8, eval mixed (legacy): compressed table alone"
    assert mixed[-3] == 91.3 and alone[-3] is None  # the bytes recorded are the mixed model's
    text = runs_table([legacy])  # a missing byte ratio must not turn the column into text
    assert re.search(r"\|\s+91\.30 \|", text) and re.search(r"\|\s+-\s+\|", text)


def test_a_setting_recorded_unset_is_the_same_as_one_not_recorded():
    """A record written before a config field existed lacks it; one written after holds its
    default, None. They are seeds of one config (as their run keys already treat them)."""
    older, newer = _record(0, 20.0), _record(1, 22.0, dropout_epochs=None)
    assert len(seed_summary_rows([older, newer])) == 1
    assert len(seed_summary_rows([older, _record(1, 22.0, dropout_epochs=1)])) == 2


def test_another_dataset_version_is_never_averaged_in():
    other = copy.deepcopy(_record(1, 50.0))
    other["dataset"]["checksum"] = "d"
    assert len(seed_summary_rows([_record(0, 20.0), other])) == 2


def test_cases_table_has_a_row_per_run_and_case_group():
    from ecbench.bench.report.tables import cases_table

    analysis = {"dataset": "tmall", "config": _record(0, 20.0)["config"],
                "test_by_case": {"repeat": {"share": 45.0, "HR@10": 50.0, "NDCG@10": 35.0,
                                            "MRR@10": 30.0},
                                 "new": {"share": 55.0}}}  # an empty group has only its share
    lines = cases_table([analysis]).splitlines()
    assert len(lines) == 4 and "repeat" in lines[2] and "new" in lines[3]
    assert "50.00" in lines[2] and "nan" in lines[3]


def test_the_record_index_lists_every_curated_run_once_with_its_scores():
    import json
    from pathlib import Path

    from ecbench.bench.records import iter_records
    from ecbench.bench.report.tables import record_index

    results = Path(__file__).resolve().parents[1] / "results"
    records = list(iter_records(results))
    text = record_index(records)
    for record in records:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{record['key']}`")]
        assert len(rows) == 1, record["key"]
        assert f"{record['test']['HR@10']:.2f} / {record['test']['NDCG@10']:.2f}" in rows[0]
        on_disk = json.loads((results / "runs").glob(f"*-{record['key']}.json").__next__().read_text())
        assert on_disk["seed"] == record["seed"]
