"""`ecbench reproduce TABLE`: the runs behind each of the paper's tables, the most telling
first, each a valid run of the paper's method, checked before anything runs."""

from __future__ import annotations

import pytest

from ecbench.bench.cli.main import run_config_of
from ecbench.bench.cli.sweep_commands import paper_spec, table4_shapes
from ecbench.bench.report.paper import TABLE4
from ecbench.bench.report.paper_tables import on_paper_protocol, table3_model, without_protocol
from ecbench.bench.report.tables import departures_from_paper
from helpers import run_cli


def test_table4_covers_the_papers_grid_with_the_telling_cells_first():
    shapes = table4_shapes("tmall")
    assert shapes[:4] == [(1, 32), (4, 32), (3, 256), (5, 512)]
    assert sorted(shapes) == sorted(TABLE4["tmall"]) and len(shapes) == 20
    rr = table4_shapes("retailrocket")
    assert rr[:2] == [(1, 32), (3, 256)] and {m for m, _ in rr} == {1, 3, 5}


@pytest.mark.parametrize("table, data, runs", [("table3", "tmall", 8 * 3),
                                               ("table3", "retailrocket", 8 * 3),
                                               ("table4", "tmall", 20), ("fig3", "tmall", 5 * 3),
                                               ("table5", "retailrocket", 8)])
def test_every_run_is_the_papers_method_at_the_papers_settings(table, data, runs):
    jobs = [job for job in paper_spec(table, data, seeds=3).jobs()
            if "--select-on" not in job]  # Table 3's legacy column: the next test
    assert len(jobs) == runs
    for job in jobs:
        config = run_config_of(list(job))
        assert config.data == data and config.select_on == "validation"
        if config.compressor == "ccode":  # no variant of ours among them
            assert not departures_from_paper(config.to_dict()), job


def as_record(job: tuple[str, ...], data: str) -> dict:
    """What the report reads of a run's record: its config, its data, and (for OD-Rec's row)
    the byte ratio its --ratio budget meets."""
    config = run_config_of(list(job)).to_dict()
    return {"config": config, "dataset": {"name": data},
            "size": {"item_storage": {"byte_ratio": config["ratio"]}}}


@pytest.mark.parametrize("data", ["tmall", "retailrocket"])
def test_table3_runs_every_row_once_by_the_papers_protocol_for_its_labelled_column(data):
    jobs = paper_spec("table3", data, seeds=3).jobs()
    legacy = [job for job in jobs if "--select-on" in job]
    records = [as_record(job, data) for job in legacy]
    assert all(on_paper_protocol(r) for r in records)
    rows = [table3_model({**r, "config": without_protocol(r["config"])}) for r in records]
    assert sorted(rows) == sorted(["Teacher", "GRU4Rec", "NARM", "STAMP", "SR-GNN", "OD-Rec",
                                   "Stu-base", "Student"])
    # seed 0 of every row comes before the legacy runs, the other seeds after them
    seeds = [job[job.index("--seed") + 1] for job in jobs]
    first_legacy = jobs.index(legacy[0])
    assert set(seeds[:first_legacy]) == {"0"} and len(jobs[:first_legacy]) == 8
    assert set(seeds[first_legacy + 8:]) == {"1", "2"}


def test_dry_run_lists_the_runs_and_runs_nothing(tmp_path):
    proc = run_cli(["reproduce", "table4", "--dry-run", "--device", "cpu",
                    "--results", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ecbench run --data tmall --compressor ccode --M 1 --K 32 --seed 0"
    assert len(lines) == 20 and not (tmp_path / "r" / "runs").exists()
    bad = run_cli(["reproduce", "table4", "--seeds", "0", "--dry-run"], tmp_path)
    assert bad.returncode != 0 and "--seeds must be at least 1" in bad.stderr


def test_table5_times_one_seed_of_every_table3_model():
    table3 = {tuple(a for a in job if a != "0") for job in paper_spec("table3", "tmall", 1).jobs()
              if "--select-on" not in job}
    table5 = {tuple(a for a in job if a != "0") for job in paper_spec("table5", "tmall", 3).jobs()}
    assert table5 == table3 and len(table5) == 8
