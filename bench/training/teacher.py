"""The hand-offs between runs: the uncompressed teacher a student learns from, and the
pretrained student a distillation starts from; each found by record, or trained first."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ecbench.backbones import Backbone
from ecbench.bench.training.config import RunConfig
from ecbench.bench.errors import ConfigError
from ecbench.bench.records import find_record, load_record, load_weights, record_key


class MissingModel(ConfigError):
    """A teacher's record is here but its trained weights are not."""


@dataclass
class Teacher:
    """A trained run: its record and weights (a teacher, or a pretrained student)."""

    record: dict[str, Any]
    record_path: Path
    state: dict[str, torch.Tensor]

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_record(self.record, self.record_path)

    def summary(self) -> dict[str, Any]:
        return {"key": self.record["key"], "record": str(self.record_path),
                "test": self.record["test"], "selection": self.record["selection"]}


def teacher_config(config: RunConfig) -> RunConfig:
    """The uncompressed run with the same data and settings as a student's."""
    return dataclasses.replace(config, compressor="full", compressor_options={}, teacher=None,
                               student_init=None, ratio=None, distill=None, pretrained=None)


def pretrain_config(config: RunConfig) -> RunConfig:
    """A distilled student's pretraining (Algorithm 1, line 2): the same run without distillation
    (the paper's Stu-base)."""
    return dataclasses.replace(config, distill=None, pretrained=None)


def locate_teacher_record(spec: str, results_dir: Path, what: str = "teacher") -> Path:
    """`spec` is a record JSON, a model file named `<key>.pt`, or a record key."""
    path = Path(spec)
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"{what} record {path} does not exist")
        return path
    key = path.stem if path.suffix == ".pt" else spec
    found = find_record(results_dir, key)
    if found is None:
        raise ConfigError(f"no run record for {what} {spec!r} under {results_dir}/runs")
    return found


def load_teacher(record_path: Path, workdir: Path) -> Teacher:
    """A run's record and trained weights; weights live in the work folder, as runs leave them."""
    record = load_record(record_path)
    RunConfig.from_record(record, record_path)  # refuses a config this version cannot run
    model_file = Path(workdir) / "models" / f"{record_key(record, record_path)}.pt"
    if not model_file.is_file():
        raise MissingModel(f"the model of record {record_path} is not at {model_file}: "
                           "pass the --workdir it was trained in, or rerun it with --force")
    return Teacher(record, record_path, load_weights(model_file))


Train = Callable[[RunConfig, bool], tuple[dict[str, Any], Path]]


def resolve_run(spec: str | None, derived: RunConfig, what: str, *, results_dir: Path,
                workdir: Path, train: Train, log: Callable[[str], None]) -> Teacher:
    """The run `spec` names, or else the recorded (or freshly trained) run of `derived`."""
    if spec:
        return load_teacher(locate_teacher_record(spec, results_dir, what), workdir)
    log(f"training (or reusing) {what} first")
    _, path = train(derived, False)
    try:
        return load_teacher(path, workdir)
    except MissingModel:  # recorded elsewhere (a fresh clone): the weights must be remade
        log(f"{what}: the recorded run's model file is not here; training it again")
        _, path = train(derived, True)
        return load_teacher(path, workdir)


def resolve_teacher(config: RunConfig, data_checksum: str, *, results_dir: Path, workdir: Path,
                    train: Train, log: Callable[[str], None]) -> Teacher:
    """The given teacher, or the recorded (else freshly trained) full-table run of these settings."""
    teacher = resolve_run(config.teacher, teacher_config(config),
                          "the uncompressed teacher with the same settings",
                          results_dir=results_dir, workdir=workdir, train=train, log=log)
    check_compatible(teacher, "teacher", config, data_checksum)
    return teacher


def resolve_pretrained(config: RunConfig, data_checksum: str, *, results_dir: Path,
                       workdir: Path, train: Train, log: Callable[[str], None]) -> Teacher:
    """The student a distillation starts from: `--pretrained`, else the same run undistilled."""
    run = resolve_run(config.pretrained, pretrain_config(config),
                      "the pretrained student (the same settings without distillation)",
                      results_dir=results_dir, workdir=workdir, train=train, log=log)
    check_compatible(run, "pretrained student", config, data_checksum)
    theirs = run.record["config"]
    if (theirs["compressor"], theirs["backbone"]) != (config.compressor, config.backbone):
        raise ConfigError(f"pretrained student {run.record_path} is {theirs['backbone']}+"
                          f"{theirs['compressor']}, not {config.backbone}+{config.compressor}")
    return run


def check_compatible(run: Teacher, what: str, config: RunConfig, data_checksum: str) -> None:
    if run.record["dataset"]["checksum"] != data_checksum:
        raise ConfigError(f"{what} {run.record_path} was trained on another dataset "
                          f"({run.record['dataset']['name']})")
    if run.record["config"]["dim"] != config.dim:
        raise ConfigError(f"{what} {run.record_path} has dim {run.record['config']['dim']}"
                          f", the student {config.dim}")


def teacher_table(teacher: Teacher, build: Callable[[RunConfig], Backbone]) -> torch.Tensor:
    """The teacher's item table as its own compressor reconstructs it."""
    model = build(teacher.config)
    model.load_state_dict(teacher.state)
    with torch.no_grad():
        return model.eval().compressor.weight().detach().clone()


def copy_encoder(student: Backbone, backbone: str, teacher: Teacher, required: bool) -> bool:
    """Start the student's encoder (everything but the item table) from the teacher's."""
    own = student.state_dict()
    encoder = {k: v for k, v in teacher.state.items() if not k.startswith("compressor.")}
    # a repeat head comes along only to a student with the same head; another keeps its own
    heads = [{k for k in keys if k.startswith("repeat.")} for keys in (encoder, own)]
    if heads[0] != heads[1]:
        encoder = {k: v for k, v in encoder.items() if k not in heads[0]}
    mismatch = [k for k, v in encoder.items() if k not in own or own[k].shape != v.shape]
    if mismatch or teacher.record["config"]["backbone"] != backbone:
        if required:
            raise ConfigError(f"--student-init teacher needs the teacher's backbone and shapes; "
                              f"these differ: {', '.join(mismatch[:3]) or 'backbone'}")
        return False
    student.load_state_dict(encoder, strict=False)
    return True

