"""Bad input through `ecbench run`: a one-line error, a non-zero exit, no traceback, no record."""

from __future__ import annotations

import pickle

import pytest

from helpers import GOOD_TEST, GOOD_TRAIN, records_under, run_cli

TINY = ["--epochs", "1", "--dim", "16", "--threads", "1", "--no-progress"]


def run_failing(args: list[str], tmp_path) -> str:
    """Run `ecbench run ARGS`, check it failed cleanly, and return its error line."""
    results, work = tmp_path / "results", tmp_path / "work"
    proc = run_cli(["run", *TINY, *args, "--results", str(results), "--workdir", str(work)],
                   cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    # what the run announced before it started (its threads, its plan), then one error line
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith(("threads: ", "data ", "plan: "))]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert records_under(results) == []
    assert not list(work.glob("checkpoints/*.pt"))
    return lines[0]


# -- bad data folders ------------------------------------------------------------------------

def test_data_folder_missing_a_file(make_dataset, tmp_path):
    folder = make_dataset("half", GOOD_TRAIN)
    assert "missing test.txt" in run_failing(["--data", str(folder)], tmp_path)


def test_data_folder_that_does_not_exist(tmp_path):
    assert "no dataset" in run_failing(["--data", str(tmp_path / "nowhere")], tmp_path)


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_and_not_run(make_dataset, tmp_path):
    sentinel = tmp_path / "SENTINEL"
    raw = pickle.dumps([[1, 2], _RunsShell(f"touch {sentinel}")], protocol=2)
    folder = make_dataset("evil", test=GOOD_TEST, train_bytes=raw)
    line = run_failing(["--data", str(folder)], tmp_path)
    assert "refused pickle" in line and "system" in line
    assert not sentinel.exists()


def test_out_of_range_test_ids(make_dataset, tmp_path):
    folder = make_dataset("range", GOOD_TRAIN, ([[1, 2], [40]], [3, 4]))
    assert "item id 40 in test prefixes is out of range" in run_failing(["--data", str(folder)],
                                                                        tmp_path)


def test_empty_sessions(make_dataset, tmp_path):
    folder = make_dataset("empty", GOOD_TRAIN + [[]], GOOD_TEST)
    assert "1 empty training sessions" in run_failing(["--data", str(folder)], tmp_path)


def test_unseen_test_label(make_dataset, tmp_path):
    folder = make_dataset("unseen", [[1, 3], [3, 1, 4], [4, 1]], ([[1], [3]], [3, 2]))
    assert "never occur in training" in run_failing(["--data", str(folder)], tmp_path)


# -- bad options -----------------------------------------------------------------------------

def test_unknown_compressor_lists_the_known_ones(tmp_path):
    line = run_failing(["--compressor", "nosuch"], tmp_path)
    assert "unknown compressor 'nosuch'" in line and "full" in line


def test_unknown_option(tmp_path):
    assert "unknown option --nosuch" in run_failing(["--nosuch", "3"], tmp_path)


@pytest.mark.parametrize("args,message", [
    (["--layers", "0"], "layers must be at least 1"),
    (["--dropout", "1.5"], "dropout must be in [0, 1)"),
    (["--layers", "abc"], "--layers takes a"),  # an int, got 'abc'
    (["--dim", "0"], "--dim must be positive"),
    (["--threads", "0"], "--threads must be at least 1"),
])
def test_bad_option_values(tmp_path, args, message):
    assert message in run_failing(args, tmp_path)


# -- training that diverges ------------------------------------------------------------------

def test_nan_loss_stops_with_an_error(tmp_path):
    # Adam's first step moves every weight by about lr, so lr = 1e30 overflows the scores and the
    # second step's loss is NaN, deterministically (seeded), before any epoch completes.
    line = run_failing(["--lr", "1e30"], tmp_path)
    assert "loss became nan at epoch 1" in line and "no checkpoint" in line
