"""Sweeps: specs checked before anything runs, grids expanded, shared prerequisites trained once."""

from __future__ import annotations

import fcntl
import json
import subprocess
import time
from pathlib import Path

import pytest
from helpers import ecbench_command, records_under, run_cli

from ecbench.bench.cli.main import run_config_of
from ecbench.bench.errors import ConfigError
from ecbench.bench.sweep import SweepSpec, load_spec
from ecbench.bench.data.synthetic import synthetic_dataset

SPECS = Path(__file__).resolve().parent.parent / "bench" / "sweeps"


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_grid_and_runs_expand_to_every_combination_in_order():
    spec = SweepSpec("s", base=("--data", "tmall"), grid={"--M": ("3", "4"), "--K": ("256",)},
                     runs=(("--kd", "full"), ()))
    assert spec.jobs() == [
        ("--data", "tmall", "--kd", "full", "--M", "3", "--K", "256"),
        ("--data", "tmall", "--kd", "full", "--M", "4", "--K", "256"),
        ("--data", "tmall", "--M", "3", "--K", "256"),
        ("--data", "tmall", "--M", "4", "--K", "256")]
    assert SweepSpec("s", runs=(("--seed", "1"), ("--seed", "1"))).jobs() == [("--seed", "1")]
    assert SweepSpec("s").jobs() == [()]


@pytest.mark.parametrize("text, message", [
    ("name = [", "not valid TOML"),
    ('colour = "red"', "unknown keys ['colour']"),
    ('[grid]\nM = [1, 2]', "grid key 'M' is not an --option"),
    ('[grid]\n"--M" = []', "grid --M has no values"),
    ('base = "--data tmall"', "base must be a list"),
    ("runs = [[{a = 1}]]", "runs[0] must be a list"),
])
def test_a_malformed_spec_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_spec(_spec(tmp_path, text))


def test_the_shipped_specs_load_and_every_run_is_a_valid_config():
    for path in SPECS.glob("*.toml"):
        spec = load_spec(path)
        assert spec.name == path.stem and spec.jobs()
        for job in spec.jobs():  # options known, values possible: what --dry-run checks
            run_config_of(list(job))
    assert len(load_spec(SPECS / "baselines.toml").jobs()) == 8
    legacy = run_config_of(list(load_spec(SPECS / "legacy-tmall.toml").jobs()[0]))
    assert legacy.select_on == "test" and legacy.compressor_options["eval_table"] == "mixed"


def test_the_weight_sweeps_reuse_the_ablation_student_at_the_defaults():
    def configs(name: str) -> list:
        return [run_config_of(list(job)) for job in load_spec(SPECS / f"{name}.toml").jobs()]

    student = configs("ablation-tmall")[0]
    assert student.distill["eta"] == 0.8 and student.distill["beta"] == 0.01
    assert sum(c == student for c in configs("eta-tmall")) == 1
    assert sum(c == student for c in configs("kd-weights-tmall")) == 1
    assert {c.distill["eta"] for c in configs("eta-tmall")} == {i / 10 for i in range(1, 10)}


def test_dry_run_checks_every_run_before_anything_starts(tmp_path):
    good = _spec(tmp_path, 'base = ["--epochs", "1"]\n[grid]\n"--seed" = [0, 1]\n')
    proc = run_cli(["sweep", str(good), "--dry-run", "--results", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ecbench run --epochs 1 --seed 0",
                                        "ecbench run --epochs 1 --seed 1"]
    bad = _spec(tmp_path, 'runs = [["--epochs", "1"], ["--compressor", "ccode", "--Q", "2"]]\n')
    proc = run_cli(["sweep", str(bad), "--results", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2
    assert "--compressor ccode --Q 2" in proc.stderr and "unknown option --Q" in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing ran


def test_an_unknown_executor_is_an_error_also_under_dry_run(tmp_path):
    good = _spec(tmp_path, 'base = ["--epochs", "1"]\n')
    proc = run_cli(["sweep", str(good), "--dry-run", "--executor", "rya"], tmp_path)
    assert proc.returncode != 0 and "unknown" in proc.stderr and "rya" in proc.stderr


@pytest.mark.slow
def test_parallel_runs_train_their_shared_teacher_once(tmp_path):
    spec = _spec(tmp_path, 'base = ["--compressor", "ccode", "--M", "2", "--K", "64", '
                           '"--epochs", "1", "--dim", "16"]\n[grid]\n"--seed" = [0]\n'
                           '"--code-sample" = [0.5, 1.0]\n')
    results, work = tmp_path / "results", tmp_path / "work"
    proc = run_cli(["sweep", str(spec), "--workers", "2", "--results", str(results),
                    "--workdir", str(work)], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(p.read_text()) for p in records_under(results)]
    assert sorted(r["config"]["compressor"] for r in records) == ["ccode", "ccode", "full"]
    logs = [p.read_text() for p in sorted((work / "sweeps" / "spec").glob("*.log"))]
    teacher = next(r for r in records if r["config"]["compressor"] == "full")
    reused = [log for log in logs if f"reusing the record of an identical run: "
              f"{results}/runs/synthetic-sasrec-full-{teacher['key']}" in log]
    assert len(logs) == 2 and len(reused) == 1  # one job trained it, the other waited or reused
    assert all(r["key"] in proc.stdout for r in records if r["config"]["compressor"] == "ccode")


def test_a_run_waits_while_another_process_holds_its_lock(tmp_path):
    args = ["--epochs", "1", "--dim", "16", "--threads", "1", "--no-progress"]
    key = run_config_of(args).key(synthetic_dataset().checksum)
    work, results = tmp_path / "work", tmp_path / "results"
    (work / "locks").mkdir(parents=True)
    stderr = tmp_path / "stderr.txt"
    with open(work / "locks" / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as if another process were training this run
        with open(stderr, "w") as err:
            proc = subprocess.Popen(ecbench_command() + ["run", *args, "--results", str(results),
                                                         "--workdir", str(work)],
                                    cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 60
        while "waiting for it" not in stderr.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "waiting for it" in stderr.read_text()
        assert proc.poll() is None and not records_under(results)
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert proc.wait(timeout=300) == 0, stderr.read_text()
    assert len(records_under(results)) == 1


def test_two_sweeps_of_one_name_write_their_runs_into_their_own_logs(tmp_path):
    from ecbench.bench.sweep.jobs import job_log

    a = job_log(tmp_path, 0, ("--compressor", "hash", "--ratio", "10"))
    b = job_log(tmp_path, 0, ("--compressor", "pq", "--ratio", "30"))
    assert a != b and a.parent == b.parent == tmp_path and a.name.startswith("000-")
    assert job_log(tmp_path, 0, ("--compressor", "hash", "--ratio", "10")) == a


def _plan_seconds(stderr: str) -> float:
    """The bound in all of a run's announced plan ('... at most 2 min of training in all')."""
    plan = next(line for line in stderr.splitlines() if line.startswith("plan: "))
    value, unit = plan.split("at most ")[1].split(" of training")[0].split()
    return float(value) * {"s": 1, "min": 60, "h": 3600}[unit]


def test_max_hours_skips_the_runs_whose_plan_exceeds_it_and_trains_the_others(tmp_path):
    """A run's plan (its measured step x its steps x its maximum epochs) decides: the run of 50
    epochs exceeds a limit that the run of 1 epoch meets, so it is skipped before anything is
    trained (exit code 3, reported apart from failures), and the sweep succeeds."""
    from ecbench.bench.errors import OverTimeLimit

    spec = _spec(tmp_path, 'base = ["--dim", "16"]\nruns = [["--epochs", "1"], '
                           '["--epochs", "50"]]\n')
    results, work = tmp_path / "results", tmp_path / "work"
    one_epoch = run_cli(["run", "--dim", "16", "--epochs", "1", "--plan-only", "--threads", "1",
                         "--results", str(results)], tmp_path)
    limit_hours = 7 * _plan_seconds(one_epoch.stderr) / 3600  # 7 epochs' worth: 1 < 7 < 50
    proc = run_cli(["sweep", str(spec), "--workers", "1", "--max-hours", f"{limit_hours:.6f}",
                    "--results", str(results), "--workdir", str(work)], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "skipped (over --max-hours" in proc.stderr and "1 of 2 runs skipped" in proc.stderr
    records = [json.loads(p.read_text()) for p in records_under(results)]
    assert [r["config"]["epochs"] for r in records] == [1]
    long_run = run_config_of(["--dim", "16", "--epochs", "50"]).key(synthetic_dataset().checksum)
    assert not (work / "checkpoints" / f"{long_run}.pt").exists()  # nothing of it trained
    refused = run_cli(["run", "--dim", "16", "--epochs", "50", "--max-hours", "1e-9",
                       "--results", str(results), "--workdir", str(work)], tmp_path)
    assert refused.returncode == OverTimeLimit.exit_code
    assert "over --max-hours" in refused.stderr and "Traceback" not in refused.stderr
    bad = run_cli(["sweep", str(spec), "--max-hours", "0", "--dry-run"], tmp_path)
    assert bad.returncode == 2 and "--max-hours must be positive" in bad.stderr
