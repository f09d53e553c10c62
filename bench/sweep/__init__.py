"""Sweeps: many `ecbench run`s from one spec file, run side by side by an executor.

A spec is a TOML file:

    name = "table4-tmall"
    base = ["--data", "tmall", "--compressor", "ccode", "--freeze-codes-after", "0"]
    [grid]                 # every combination of these values is a run
    "--M" = [1, 2, 3, 4, 5]
    "--K" = [32, 128, 256, 512]
    runs = [["--kd", "full"], ["--kd", "full", "--no-soft"]]   # optional: more runs, each
                                                              # base + its arguments (+ grid)

Each run is its own `ecbench run` process, so a crash loses one run, not the sweep, and a rerun
of the sweep resumes its unfinished runs and reuses the finished ones (their records). Runs
that need the same teacher or pretrained student do not train it twice: the first takes the
run's lock (`ecbench.bench.training.runner.run_lock`), the others wait for its record.

The executor decides where runs go. `local` runs `--workers` processes on this machine (or
`--runs-per-gpu` on each GPU); `ray` sends each run to a Ray cluster as a task
(`ray_executor`). Another (Dask, Slurm) is a plugin registered under the entry-point group
``ecbench.executors`` with the same `run_all` contract (`jobs.Executor`).
"""

from __future__ import annotations

import itertools
import queue
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ecbench.bench.errors import ConfigError
from ecbench.bench.sweep.jobs import Executor, JobResult, run_command, run_job
from ecbench.bench.sweep.ray_executor import RayConfig, RayExecutor
from ecbench.compressors.named_registry import Registry

__all__ = ["Executor", "JobResult", "LocalConfig", "LocalExecutor", "RayConfig", "RayExecutor",
           "SweepSpec", "load_spec", "registry", "run_command", "run_job"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as a package before Python 3.11
    import tomli as tomllib

SPEC_KEYS = {"name", "base", "grid", "runs"}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: tuple[str, ...] = ()
    grid: dict[str, tuple[str, ...]] = field(default_factory=dict)
    runs: tuple[tuple[str, ...], ...] = ()

    def jobs(self) -> list[tuple[str, ...]]:
        """The argument lists of every run: base + each extra run (or nothing) + each grid
        combination, in a stable order, duplicates dropped."""
        names = list(self.grid)
        combos = [tuple(itertools.chain.from_iterable(zip(names, values)))
                  for values in itertools.product(*(self.grid[n] for n in names))]
        extras = self.runs or ((),)
        jobs = [self.base + extra + combo for extra in extras for combo in combos]
        return list(dict.fromkeys(jobs))


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(f"{where} must be a list of strings or numbers")
    return tuple(str(v) for v in value)


def load_spec(path: Path) -> SweepSpec:
    """Read and check a sweep spec; any problem is one ConfigError naming it."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read sweep spec {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep spec {path} is not valid TOML: {exc}") from None
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"sweep spec {path}: unknown keys {sorted(unknown)} "
                          f"(allowed: {sorted(SPEC_KEYS)})")
    grid_raw = raw.get("grid", {})
    if not isinstance(grid_raw, dict):
        raise ConfigError(f"sweep spec {path}: [grid] must be a table of option = [values]")
    grid = {}
    for option, values in grid_raw.items():
        if not option.startswith("--"):
            raise ConfigError(f"sweep spec {path}: grid key {option!r} is not an --option")
        grid[option] = _strings(values, f"grid {option}")
        if not grid[option]:
            raise ConfigError(f"sweep spec {path}: grid {option} has no values")
    runs = raw.get("runs", [])
    if not isinstance(runs, list):
        raise ConfigError(f"sweep spec {path}: runs must be a list of argument lists")
    return SweepSpec(name=str(raw.get("name", Path(path).stem)),
                     base=_strings(raw.get("base", []), "base"), grid=grid,
                     runs=tuple(_strings(r, f"runs[{i}]") for i, r in enumerate(runs)))


@dataclass
class LocalConfig:
    workers: int = 2
    # where runs train: "cpu", or the GPUs to share out, comma-separated ("cuda:0,cuda:1")
    devices: str = "cpu"
    runs_per_gpu: int = 1  # runs packed on each GPU at once, each its own process

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.runs_per_gpu < 1:
            raise ValueError(f"--runs-per-gpu must be at least 1, got {self.runs_per_gpu}")


def device_slots(devices: str, runs_per_gpu: int) -> list[str]:
    """One entry per run that may train at once on the GPUs of `devices`: each GPU
    `runs_per_gpu` times ([] for the CPU)."""
    gpus = [d.strip() for d in devices.split(",") if d.strip().startswith("cuda")]
    return [gpu for _ in range(runs_per_gpu) for gpu in gpus]


class LocalExecutor:
    """Runs on this machine: on the CPU `workers` at a time (give each `--threads` so that
    workers x threads does not exceed the cores); on GPUs `runs_per_gpu` on each GPU at once,
    each run told its GPU with `--device`."""

    def __init__(self, config: LocalConfig) -> None:
        self.slots = device_slots(config.devices, config.runs_per_gpu)
        self.workers = len(self.slots) or config.workers

    def run_all(self, jobs: list[tuple[str, ...]], *, logs: Path,
                on_done: Callable[[JobResult], None],
                chains: list[list[str]] | None = None) -> list[JobResult]:
        """Runs share prerequisites through run locks on this machine: `chains` is unused."""
        logs.mkdir(parents=True, exist_ok=True)
        free: queue.Queue[str] = queue.Queue()
        for slot in self.slots or ["cpu"] * self.workers:
            free.put(slot)

        def work(index: int) -> JobResult:
            device = free.get()  # a worker thread holds one slot while its run lasts
            try:
                result = run_job(index, jobs[index] + ("--device", device), logs)
            finally:
                free.put(device)
            on_done(result)
            return result

        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(work, range(len(jobs))))


registry: Registry[Executor] = Registry("executor", "ecbench.executors")


@registry.register("local", config=LocalConfig, description="processes on this machine")
def build_local(config: LocalConfig) -> LocalExecutor:
    return LocalExecutor(config)


@registry.register("ray", config=RayConfig,
                   description="Ray tasks on this machine or a cluster (pip install 'ecbench[ray]')")
def build_ray(config: RayConfig) -> RayExecutor:
    return RayExecutor(config)
