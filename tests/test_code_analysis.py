"""Code statistics of a ccode table on hand-made codes: usage, neighbours, crowding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import records_under, run_cli

from ecbench.bench.report.code_analysis import (codeword_usage, neighbour_share, one_codeword_neighbours,
                                 summarise_codes)

# five unique codes over M=3 codebooks of K=4 codewords
CODES = np.array([[0, 0, 0],
                  [0, 0, 1],  # one codeword from the first and the third
                  [0, 1, 1],  # one from the second
                  [3, 3, 3],  # alone
                  [2, 0, 0]])  # one from the first


def test_codeword_usage_counts_items_per_codeword():
    usage = codeword_usage(CODES, K=4)
    assert usage.shape == (3, 4) and (usage.sum(1) == len(CODES)).all()
    assert usage[0].tolist() == [3, 0, 1, 1]


def test_one_codeword_neighbours_against_brute_force():
    brute = [sum(int((CODES[i] != CODES[j]).sum() == 1) for j in range(len(CODES)) if j != i)
             for i in range(len(CODES))]
    assert one_codeword_neighbours(CODES).tolist() == brute == [2, 2, 1, 0, 1]


def test_random_codes_match_brute_force():
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 5, size=(300, 3)), axis=0)
    diff = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    assert one_codeword_neighbours(codes).tolist() == (diff == 1).sum(1).tolist()


def test_neighbour_share_of_listed_items():
    top = np.array([[1, 3], [0, 4]])  # items listed for two cases
    labels = np.array([0, 2])
    # case 0: item 1 is one codeword from item 0, item 3 is not; case 1: neither is
    assert neighbour_share(top, labels, CODES) == pytest.approx(0.25)


def test_summary_names_occupancy_and_neighbours():
    summary = summarise_codes(CODES, K=4)
    assert summary["occupancy"] == pytest.approx(5 / 64)
    assert summary["one_codeword_neighbours_mean"] == pytest.approx(6 / 5)
    assert summary["items_with_a_neighbour"] == pytest.approx(80.0)
    assert summary["unused_codewords"] == (codeword_usage(CODES, 4) == 0).sum()


@pytest.mark.slow
def test_codes_command_on_a_trained_student(tmp_path):
    results, work = tmp_path / "results", tmp_path / "work"
    student = ["run", "--compressor", "ccode", "--M", "3", "--K", "16", "--epochs", "1",
               "--dim", "16", "--threads", "1", "--no-progress", "--results", str(results),
               "--workdir", str(work)]
    trained = run_cli(student, tmp_path)
    assert trained.returncode == 0, trained.stderr
    record = next(p for p in records_under(results) if "ccode" in p.name)
    proc = run_cli(["codes", str(record), "--workdir", str(work), "--results", str(results)],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr
    analysis = json.loads((results / "analysis" / f"codes-{record.stem}.json").read_text())
    usage = np.array(analysis["codes"]["codeword_usage"])
    assert usage.shape == (3, 16) and (usage.sum(1) == analysis["codes"]["items"]).all()
    assert set(analysis["crowding"]) == {"repeat", "new"}
    teacher = next(p for p in records_under(results) if "full" in p.name)
    refused = run_cli(["codes", str(teacher), "--workdir", str(work), "--results", str(results)],
                      tmp_path)
    assert refused.returncode != 0 and "ccode" in refused.stderr
