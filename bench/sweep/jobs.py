"""One run of a sweep as its own `ecbench run` process, and what an executor reports of it."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

from ecbench.bench.errors import OverTimeLimit


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

    @property
    def skipped(self) -> bool:
        """Refused before training: its plan exceeded `--max-hours` (`OverTimeLimit`)."""
        return self.returncode == OverTimeLimit.exit_code


class Executor(Protocol):
    """Runs every job (the arguments of an `ecbench run`), calling `on_done` as each ends.
    `chains` holds, per job, the keys of the runs it stands on and its own last, for an
    executor that must ship prerequisites to where a run goes (None where not computed)."""

    def run_all(self, jobs: list[tuple[str, ...]], *, logs: Path,
                on_done: Callable[[JobResult], None],
                chains: list[list[str]] | None = None) -> list[JobResult]: ...


def run_command(args: Iterable[str]) -> list[str]:
    """The command line of one run: this interpreter's `ecbench run`."""
    return [sys.executable, "-m", "ecbench.bench.cli", "run", *args]


def job_log(logs: Path, index: int, args: tuple[str, ...]) -> Path:
    """Where a run's output goes: its place in the sweep and a digest of its arguments, so two
    sweeps of one name (other options, running at once) never write into one file."""
    digest = hashlib.sha256(shlex.join(args).encode()).hexdigest()[:8]
    return logs / f"{index:03d}-{digest}.log"


def run_job(index: int, args: tuple[str, ...], logs: Path) -> JobResult:
    """One run as its own process, its output in `job_log`."""
    log = job_log(logs, index, args)
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
