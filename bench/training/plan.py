"""What a run will train before it starts, and roughly how long that takes.

A student's command may first train its teacher and its pretrained student (the paper's
Stu-base), each for as many epochs as validation allows. Before any of that starts, the user
sees the chain and an upper bound on its time: each stage's training step is measured on the
real data (a few steps of its model at the real shapes), times the batches of an epoch, times
its maximum epochs. Early stopping makes the real time shorter; evaluation adds a little.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecbench.bench.records import find_record
from ecbench.bench.training.benchmarks import step_timer, training_objective
from ecbench.bench.training.config import RunConfig
from ecbench.bench.training.teacher import pretrain_config, teacher_config
from ecbench.bench.training.train import Prepared

TIMED_STEPS = 3
WARMUP_STEPS = 2


@dataclass(frozen=True)
class Stage:
    """One training the run needs: what it is, its config and its maximum epochs."""

    name: str
    config: RunConfig
    max_epochs: int


def is_done(config: RunConfig, checksum: str, results_dir: Path, workdir: Path) -> bool:
    """Whether a run's record and its model file are both at hand (so it is reused)."""
    return key_done(config.key(checksum), results_dir, workdir)


def key_done(key: str, results_dir: Path, workdir: Path) -> bool:
    """`is_done` for the run of `key`."""
    return (find_record(results_dir, key) is not None
            and (Path(workdir) / "models" / f"{key}.pt").is_file())


def run_chain(config: RunConfig, *, needs_teacher: bool) -> list[Stage]:
    """Every training `config` stands on, in order: its teacher (a student that starts from a
    trained table, or distils, without --teacher), its pretrained student (a distillation
    without --pretrained), then itself."""
    stages = []
    if (config.distill is not None or needs_teacher) and not config.teacher:
        teacher = teacher_config(config)
        stages.append(Stage("teacher", teacher, teacher.epochs))
    if config.distill is not None:
        if not config.pretrained:
            pretrained = pretrain_config(config)
            stages.append(Stage("pretrained student (Stu-base)", pretrained, pretrained.epochs))
        stages.append(Stage("distillation", config, config.distill.get("epochs")
                            or config.epochs))
    else:
        stages.append(Stage("training", config, config.epochs))
    return stages


def stages_to_train(config: RunConfig, checksum: str, *, needs_teacher: bool,
                    results_dir: Path, workdir: Path) -> list[Stage]:
    """The trainings `config` needs that are not recorded with their model, in order."""
    *before, own = run_chain(config, needs_teacher=needs_teacher)
    stages = [s for s in before if not is_done(s.config, checksum, results_dir, workdir)]
    if stages and own.name == "training":  # after its prerequisites
        own = Stage("this run", own.config, own.max_epochs)
    return stages + [own]


def measured_step_seconds(config: RunConfig, prepared: Prepared,
                          device: torch.device = torch.device("cpu")) -> float:
    """The seconds of a training step of `config`'s model on real batches on `device`: the
    median of a few timed steps on the CPU, their mean on a GPU (timed together)."""
    run_steps = step_timer(training_objective(config, prepared), config, device)
    order = np.random.default_rng(config.seed).permutation(len(prepared.fit))
    batches = list(itertools.islice(prepared.fit.batches(config.batch_size, config.max_len,
                                                         order, device=device),
                                    WARMUP_STEPS + TIMED_STEPS))
    run_steps(batches[:WARMUP_STEPS])
    timed = batches[WARMUP_STEPS:]
    if not timed:
        return 0.0
    if device.type != "cpu":
        return run_steps(timed) / len(timed)
    return float(np.median([run_steps([batch]) for batch in timed]))


@dataclass(frozen=True)
class Plan:
    """The trainings a run needs, each with its measured step and the bound on its time."""

    parts: tuple[tuple[Stage, float, float], ...]  # (stage, seconds a step, seconds at most)
    batches: int  # training steps an epoch
    pairs: int  # training pairs

    @property
    def seconds(self) -> float:
        """The bound on the whole run's training: every stage at its maximum epochs."""
        return sum(bound for _, _, bound in self.parts)

    def describe(self) -> str:
        """One line: each stage, its epochs, batches and measured step, and the bound in all."""
        parts = [f"{stage.name} (up to {stage.max_epochs} epochs of {self.batches} steps at "
                 f"{step * 1e3:.0f} ms: {_duration(bound)})" for stage, step, bound in self.parts]
        return (f"plan: {'; then '.join(parts)}; at most {_duration(self.seconds)} of training "
                f"in all on {self.pairs:,} training pairs (early stopping shortens it)")


def measure_plan(stages: list[Stage], prepared: Prepared,
                 device: torch.device = torch.device("cpu")) -> Plan:
    """Each stage's training step measured on the real data, and its bound."""
    batches = prepared.fit.num_batches(stages[0].config.batch_size)
    parts = []
    for stage in stages:
        step = measured_step_seconds(stage.config, prepared, device)
        parts.append((stage, step, step * batches * stage.max_epochs))
    return Plan(tuple(parts), batches, len(prepared.fit))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
