"""Students start from a teacher: given by record, or trained (or reused) with the same settings."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ecbench.bench.training.config import RunConfig
from ecbench.bench.errors import ConfigError
from ecbench.bench.training.teacher import locate_teacher_record, resolve_teacher
from helpers import records_under, run_cli

STUDENT = ["--compressor", "ccode", "--M", "2", "--K", "64", "--epochs", "1", "--dim", "16",
           "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    results, work = root / "results", root / "work"
    proc = run_cli(["run", *STUDENT, "--results", str(results), "--workdir", str(work)],
                   cwd=root, timeout=600)
    return {"proc": proc, "results": results, "work": work, "root": root}


@pytest.mark.slow
def test_a_student_without_teacher_trains_the_teacher_first(student_run):
    proc = student_run["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "training (or reusing) the uncompressed teacher" in proc.stderr
    records = {json.loads(p.read_text())["config"]["compressor"]: json.loads(p.read_text())
               for p in records_under(student_run["results"])}
    assert set(records) == {"full", "ccode"}
    teacher, student = records["full"], records["ccode"]
    assert student["teacher"]["key"] == teacher["key"]
    assert teacher["config"]["dim"] == student["config"]["dim"] == 16
    assert "collisions resolved" in " ".join(student["size"]["item_storage"]["notes"])
    assert student["size"]["item_storage"]["tensors"][0]["dtype"] == "uint8"


@pytest.mark.slow
def test_a_teacher_of_another_dim_is_refused(student_run):
    teacher = next(p for p in records_under(student_run["results"]) if "-full-" in p.name)
    proc = run_cli(["run", *STUDENT, "--dim", "32", "--teacher", str(teacher),
                    "--results", str(student_run["results"]), "--workdir",
                    str(student_run["work"])], cwd=student_run["root"])
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "has dim 16, the student 32" in proc.stderr


@pytest.mark.slow
def test_a_teacher_of_another_dataset_is_refused(student_run):
    teacher = next(p for p in records_under(student_run["results"]) if "-full-" in p.name)
    config = RunConfig(compressor="ccode", dim=16, teacher=str(teacher))
    with pytest.raises(ConfigError, match="trained on another dataset"):
        resolve_teacher(config, "another-checksum", results_dir=student_run["results"],
                        workdir=student_run["work"], train=None, log=print)


def test_an_unknown_teacher_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no run record for teacher"):
        locate_teacher_record("0123456789abcdef", tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        locate_teacher_record(str(tmp_path / "missing.json"), tmp_path)


@pytest.mark.slow
def test_a_recorded_teacher_without_its_weights_is_trained_again(student_run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(student_run["results"], results)  # records only, as in a fresh clone
    proc = run_cli(["run", *STUDENT, "--K", "128", "--results", str(results),
                    "--workdir", str(tmp_path / "work")], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "model file is not here; training it again" in proc.stderr
    assert list((tmp_path / "work" / "models").glob("*.pt"))


@pytest.mark.slow
def test_a_student_pretrained_with_the_mixup_records_mixup_free_test_metrics(student_run):
    """The Stu-base pretrains on the mixed table E' (Eq. 24-25: the preset eta), yet its record
    holds the deployed table's scores: with every trace of the teacher's table wiped from the
    saved model, the test set scores exactly as recorded."""
    from ecbench.bench.deploy.recommender import load_trained
    from ecbench.bench.training.train import evaluate, load_dataset, prepare

    path = next(p for p in records_under(student_run["results"]) if "-ccode-" in p.name)
    config, record, model = load_trained(path, student_run["work"])
    assert record["config"]["compressor_options"]["eta"] == 0.8
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if "teacher" in name:
                buffer.fill_(float("nan"))  # any read of it would poison the scores
    prepared = prepare(config, load_dataset(config.data, None))
    assert evaluate(model, prepared.test, config.max_len) == record["test"]
    # the paper's scoring of the same model (the teacher's table mixed in) stands beside, labelled
    assert record["test_mixed_table"] is not None
    assert record["test_mixed_table"] != record["test"]
    assert "legacy: teacher table mixed in" in student_run["proc"].stdout
