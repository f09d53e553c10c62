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

The executor decides where runs go. `local` runs `--workers` processes on this machine; an
executor for a cluster (Ray, Dask, Slurm) is a plugin registered under the entry-point group
``ecbench.executors`` with the same `run_all` contract.
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

from ecbench.bench.errors import ConfigError
from ecbench.compressors.named_registry import Registry

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


@dataclass(frozen=True)
class JobResult:
    args: tuple[str, ...]
    returncode: int
    seconds: float
    log: Path
    record: str | None  # the record the run wrote or reused

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Executor(Protocol):
    def run_all(self, jobs: list[tuple[str, ...]], *, logs: Path,
                on_done: Callable[[JobResult], None]) -> list[JobResult]: ...


def run_command(args: Iterable[str]) -> list[str]:
    """The command line of one run: this interpreter's `ecbench run`."""
    return [sys.executable, "-m", "ecbench.bench.cli", "run", *args]


def run_job(index: int, args: tuple[str, ...], logs: Path) -> JobResult:
    """One run as its own process, its output in `logs/<index>.log`."""
    log = logs / f"{index:03d}.log"
    command = run_command(args)
    start = time.perf_counter()
    with open(log, "w") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=out, text=True)
        out.write(done.stdout)
    record = next((line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
                   if line.startswith("record:")), None)
    return JobResult(args, done.returncode, time.perf_counter() - start, log, record)


@dataclass
class LocalConfig:
    workers: int = 2

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")


class LocalExecutor:
    """`workers` runs at a time on this machine (give each `--threads` so that workers x
    threads does not exceed the cores)."""

    def __init__(self, config: LocalConfig) -> None:
        self.workers = config.workers

    def run_all(self, jobs: list[tuple[str, ...]], *, logs: Path,
                on_done: Callable[[JobResult], None]) -> list[JobResult]:
        logs.mkdir(parents=True, exist_ok=True)

        def work(index: int) -> JobResult:
            result = run_job(index, jobs[index], logs)
            on_done(result)
            return result

        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(work, range(len(jobs))))


registry: Registry[Executor] = Registry("executor", "ecbench.executors")


@registry.register("local", config=LocalConfig, description="processes on this machine")
def build_local(config: LocalConfig) -> LocalExecutor:
    return LocalExecutor(config)
