"""The teacher hand-off: find (or train) the uncompressed model a student learns from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from backbones import Backbone
from bench.config import RunConfig
from bench.errors import ConfigError
from bench.records import find_record, load_record


class MissingModel(ConfigError):
    """A teacher's record is here but its trained weights are not."""


@dataclass
class Teacher:
    record: dict[str, Any]
    record_path: Path
    state: dict[str, torch.Tensor]

    @property
    def config(self) -> RunConfig:
        return RunConfig(**self.record["config"])

    def summary(self) -> dict[str, Any]:
        return {"key": self.record["key"], "record": str(self.record_path),
                "test": self.record["test"], "selection": self.record["selection"]}


def teacher_config(config: RunConfig) -> RunConfig:
    """The uncompressed run with the same data and settings as a student's."""
    return dataclasses.replace(config, compressor="full", compressor_options={}, teacher=None,
                               student_init=None)


def locate_teacher_record(spec: str, results_dir: Path) -> Path:
    """`spec` is a record JSON, a model file named `<key>.pt`, or a record key."""
    path = Path(spec)
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"teacher record {path} does not exist")
        return path
    key = path.stem if path.suffix == ".pt" else spec
    found = find_record(results_dir, key)
    if found is None:
        raise ConfigError(f"no run record for teacher {spec!r} under {results_dir}/runs")
    return found


def load_teacher(record_path: Path, workdir: Path) -> Teacher:
    """The teacher's record and weights; weights live in the work folder, as runs leave them."""
    record = load_record(record_path)
    model_file = Path(workdir) / "models" / f"{record['key']}.pt"
    if not model_file.is_file():
        raise MissingModel(f"the model of teacher record {record_path} is not at {model_file}: "
                           "pass the --workdir it was trained in, or rerun it with --force")
    return Teacher(record, record_path, torch.load(model_file, weights_only=True))


def resolve_teacher(config: RunConfig, data_checksum: str, *, results_dir: Path, workdir: Path,
                    train: Callable[[RunConfig, bool], tuple[dict[str, Any], Path]],
                    log: Callable[[str], None]) -> Teacher:
    """The given teacher, or the recorded (else freshly trained) full-table run of these settings."""
    if config.teacher:
        teacher = load_teacher(locate_teacher_record(config.teacher, results_dir), workdir)
    else:
        log("training (or reusing) the uncompressed teacher with the same settings first")
        _, path = train(teacher_config(config), False)
        try:
            teacher = load_teacher(path, workdir)
        except MissingModel:  # recorded elsewhere (a fresh clone): the weights must be remade
            log("the recorded teacher's model file is not here; training it again")
            _, path = train(teacher_config(config), True)
            teacher = load_teacher(path, workdir)
    if teacher.record["dataset"]["checksum"] != data_checksum:
        raise ConfigError(f"teacher {teacher.record_path} was trained on another dataset "
                          f"({teacher.record['dataset']['name']})")
    if teacher.record["config"]["dim"] != config.dim:
        raise ConfigError(f"teacher {teacher.record_path} has dim {teacher.record['config']['dim']}"
                          f", the student {config.dim}")
    return teacher


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
    mismatch = [k for k, v in encoder.items() if k not in own or own[k].shape != v.shape]
    if mismatch or teacher.record["config"]["backbone"] != backbone:
        if required:
            raise ConfigError(f"--student-init teacher needs the teacher's backbone and shapes; "
                              f"these differ: {', '.join(mismatch[:3]) or 'backbone'}")
        return False
    student.load_state_dict(encoder, strict=False)
    return True

