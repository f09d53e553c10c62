"""`ecbench sweep --executor ray` on a local Ray (this machine's CPUs): a tiny sweep end to end, with the
local executor's records, shared prerequisites trained once, and one failure costing one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import records_under, run_cli

pytest.importorskip("ray")

SPEC = """
name = "tiny"
base = ["--epochs", "1", "--dim", "16"]
runs = [[], ["--compressor", "ccode", "--M", "2", "--K", "64", "--kd", "full"],
        ["--lr", "1e30"]]
"""


def _sweep(tmp_path: Path, name: str, *executor: str):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    results, work = tmp_path / name / "results", tmp_path / name / "work"
    done = run_cli(["sweep", str(spec), "--results", str(results), "--workdir", str(work),
                    "--threads", "1", "--device", "cpu", *executor], tmp_path, timeout=900)
    return done, results, work


def _metrics(results: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["key"]: json.loads(p.read_text())["test"]
            for p in records_under(results)}


@pytest.mark.slow
def test_a_ray_sweep_gives_the_local_executors_records(tmp_path):
    local, local_results, _ = _sweep(tmp_path, "local", "--workers", "1")
    ray, ray_results, ray_work = _sweep(tmp_path, "ray", "--executor", "ray")

    for done in (local, ray):  # the diverging run fails alone; the sweep says so
        assert done.returncode != 0 and "1 of 3 runs failed" in done.stderr, done.stderr
        assert done.stderr.count("done in") == 2
    # teacher, Stu-base, student: the same runs, the same numbers (one thread, same seed)
    assert _metrics(ray_results) == _metrics(local_results) and len(_metrics(ray_results)) == 3
    # the teacher the student stands on trained once, in the first run's task
    logs = sorted((ray_work / "sweeps" / "tiny").glob("*.log"))
    assert sum("reusing the record" in log.read_text() for log in logs[1:2]) == 1
    # everything came back: each record's model, the student's teacher beside it
    for record in records_under(ray_results):
        data = json.loads(record.read_text())
        assert Path(data["model_file"]).is_file() and str(ray_work) in data["model_file"]
    assert "on Ray node" in logs[2].read_text() and "loss became nan" in logs[2].read_text()

    # a rerun sends nothing: every finished run is reused, the failed one tried again
    again, _, _ = _sweep(tmp_path, "ray", "--executor", "ray")
    assert again.stderr.count("done in 0s") == 2
