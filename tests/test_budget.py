"""`--ratio`: each compressor picks its own size options to meet a byte compression ratio."""

from __future__ import annotations

import json

import pytest

from ecbench import compressors
from ecbench.compressors.ccode import CCodeConfig, ccode_budget
from ecbench.compressors.full import FullConfig, full_budget
from ecbench.compressors.sttd import STTDConfig, sttd_budget
from ecbench.compressors.tt import TTConfig, tt_budget
from helpers import records_under, run_cli

N, D = 40728, 128


@pytest.mark.parametrize("name, config, solve, option", [
    ("ccode", CCodeConfig(K=32), ccode_budget, "M"),
    ("tt", TTConfig(), tt_budget, "rank"),
    ("sttd", STTDConfig(stp=4), sttd_budget, "rank"),
])
def test_budget_picks_the_largest_table_that_meets_the_ratio(name, config, solve, option):
    solved = solve(config, N, D, 30.0)
    table = compressors.build(name, solved, num_items=N, dim=D)
    assert table.storage().byte_ratio >= 30.0
    bigger = dict(vars(solved))
    bigger[option] += 1 if name != "sttd" else solved.stp
    larger = compressors.build(name, type(solved)(**bigger), num_items=N, dim=D)
    assert larger.storage().byte_ratio < 30.0


def test_ccode_budget_keeps_codes_unique():
    solved = ccode_budget(CCodeConfig(K=2), 1001, 8, 1.01)
    assert 2 ** solved.M >= 1000


@pytest.mark.parametrize("solve, config, ratio, message", [
    (ccode_budget, CCodeConfig(K=64), 500.0, "out of reach for ccode with K=64"),
    (tt_budget, TTConfig(), 1e7, "out of reach for tt"),
    (full_budget, FullConfig(), 2.0, "out of reach for full"),
])
def test_unreachable_ratios_are_refused(solve, config, ratio, message):
    with pytest.raises(ValueError, match=message):
        solve(config, N, D, ratio)


@pytest.mark.slow
def test_the_record_shows_what_the_budget_chose(tmp_path):
    proc = run_cli(["run", "--compressor", "tt", "--ratio", "20", "--epochs", "1", "--dim", "16",
                    "--threads", "1", "--no-progress", "--results", str(tmp_path / "r"),
                    "--workdir", str(tmp_path / "w")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(records_under(tmp_path / "r")[0].read_text())
    assert record["config"]["ratio"] == 20.0
    assert record["config"]["compressor_options"]["rank"] >= 1
    assert record["size"]["item_storage"]["byte_ratio"] >= 20.0


def test_an_unreachable_ratio_is_a_one_line_error_and_no_record(tmp_path):
    proc = run_cli(["run", "--compressor", "ccode", "--K", "64", "--ratio", "500", "--dim", "16",
                    "--threads", "1", "--results", str(tmp_path / "r")], cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip() == ("error: --ratio 500 is out of reach for ccode with K=64 "
                                   "(byte ratio at most 10.5)")
    assert not records_under(tmp_path / "r")
