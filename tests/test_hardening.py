"""Bad input anywhere ends in one line naming the file and what is wrong, a non-zero exit and
nothing half-written; sizes are checked before anything is allocated by them."""

from __future__ import annotations

import json
import pickle

import pytest

from helpers import GOOD_TEST, GOOD_TRAIN, run_cli


def one_line_error(proc) -> str:
    """The failed command's error line, after checking it failed cleanly."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run: its record and its work folder (model files)."""
    root = tmp_path_factory.mktemp("trained")
    proc = run_cli(["run", "--epochs", "1", "--dim", "16", "--threads", "1", "--results",
                    str(root / "results"), "--workdir", str(root / "work")], root)
    assert proc.returncode == 0, proc.stderr
    record = next((root / "results" / "runs").glob("*.json"))
    return root, record


def altered_record(trained, tmp_path, change) -> str:
    """A copy of the trained record, changed by `change(record)`, in a results folder."""
    _, source = trained
    record = json.loads(source.read_text())
    change(record)
    path = tmp_path / "results" / "runs" / source.name
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return str(path)


# -- records and model files -----------------------------------------------------------------

@pytest.mark.parametrize("command", [["table", "runs", "--results"], ["tables", "--results"]])
def test_a_broken_record_is_one_line_naming_it(tmp_path, command):
    (tmp_path / "r" / "runs").mkdir(parents=True)
    (tmp_path / "r" / "runs" / "x.json").write_text("{broken")
    line = one_line_error(run_cli([*command, str(tmp_path / "r")], tmp_path))
    assert "x.json: not valid JSON" in line


def test_a_record_with_an_unknown_config_key_is_one_line(trained, tmp_path):
    root, _ = trained
    path = altered_record(trained, tmp_path, lambda r: r["config"].update(bogus=1))
    line = one_line_error(run_cli(["export", path, "--format", "torchscript", "--workdir",
                                   str(root / "work")], tmp_path))
    assert "unknown config key(s) bogus" in line


def test_a_record_key_cannot_steer_where_the_model_file_is_read(trained, tmp_path):
    root, _ = trained
    path = altered_record(trained, tmp_path, lambda r: r.update(key="../../../etc/passwd"))
    line = one_line_error(run_cli(["export", path, "--format", "torchscript", "--workdir",
                                   str(root / "work")], tmp_path))
    assert "is not a record key" in line


def test_a_model_file_that_fails_the_safe_load_is_one_line(trained, tmp_path):
    root, record = trained
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    key = json.loads(record.read_text())["key"]
    (work / "models" / f"{key}.pt").write_bytes(pickle.dumps({"x": 1}))  # not a torch file
    line = one_line_error(run_cli(["export", str(record), "--format", "torchscript",
                                   "--workdir", str(work)], tmp_path))
    assert f"{key}.pt: not a model file that loads safely" in line


def test_an_unwritable_results_folder_is_found_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(run_cli(["run", "--results", str(blocker / "results")], tmp_path))
    assert "cannot be written" in line and "nothing was run" in line


@pytest.mark.parametrize("ratio", ["0.5", "1"])
def test_a_ratio_of_at_most_one_is_refused(tmp_path, ratio):
    line = one_line_error(run_cli(["size", "--compressor", "tt", "--ratio", ratio], tmp_path))
    assert "--ratio must exceed 1" in line


# -- data that would allocate without bound --------------------------------------------------

def test_a_stray_huge_item_id_is_refused_naming_it(make_dataset, tmp_path):
    train = [list(s) for s in GOOD_TRAIN] + [[1, 50_000_000]]
    folder = make_dataset("stray", train, GOOD_TEST)
    line = one_line_error(run_cli(["run", "--data", str(folder), "--plan-only"], tmp_path))
    assert "item id 50,000,000" in line and f"training session {len(train) - 1}" in line


def test_a_pickle_that_repeats_a_session_by_reference_is_refused(make_dataset, tmp_path):
    session = list(range(1, 200))
    raw = pickle.dumps([session] * 20000, protocol=2)  # one session, 20,000 references
    folder = make_dataset("bomb", test=GOOD_TEST, train_bytes=raw)
    line = one_line_error(run_cli(["run", "--data", str(folder), "--plan-only"], tmp_path))
    assert "repeats sessions by reference" in line


def test_a_deeply_nested_pickle_is_one_line(make_dataset, tmp_path):
    depth = 200_000
    raw = b"\x80\x02" + b"]" * (depth + 1) + b"a" * depth + b"."
    folder = make_dataset("deep", test=GOOD_TEST, train_bytes=raw)
    line = one_line_error(run_cli(["run", "--data", str(folder), "--plan-only"], tmp_path))
    assert "not an int id" in line


def test_a_run_prints_the_datasets_counts_first(tmp_path):
    proc = run_cli(["run", "--plan-only", "--threads", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("data synthetic: "))
    assert "training sessions" in line and "items" in line and "test cases" in line


def test_evaluation_memory_is_bounded_by_its_chunk_not_the_test_set(tmp_path):
    """A 20,000-item catalogue scored over its whole test set: the peak stays near training's."""
    proc = run_cli(["bench", "memory", "--synthetic-items", "20000", "--steps", "5", "--dim",
                    "32", "--results", str(tmp_path)], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(next((tmp_path / "bench").glob("memory-*.json")).read_text())
    assert record["measurements"]["test_cases"] > 10_000
    assert record["measurements"]["evaluation_over_training"] < 1.5


def test_a_run_the_free_memory_cannot_hold_is_refused_before_allocation(tmp_path):
    """A dimension no machine here can hold for the synthetic catalogue: refused up front."""
    line = one_line_error(run_cli(["run", "--dim", "4000000", "--plan-only"], tmp_path))
    assert "needs about" in line and "GiB is free; nothing was run" in line
