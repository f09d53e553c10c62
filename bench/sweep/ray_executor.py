"""`ecbench sweep SPEC --executor ray`: each run a Ray task, on this machine or a cluster.

A run's task declares its resources (CPUs = its `--threads`, a fraction of a GPU when the
cluster has GPUs and runs train there: 1 / `--runs-per-gpu`) and runs `ecbench run` in a
scratch folder of whichever node Ray picks. A worker cannot write the driver's disk, so the
files travel: the driver sends each task the records and model files of the runs it stands on
(its teacher, its Stu-base) and its own checkpoint, if any; the task sends back every record,
model file and log it wrote (its checkpoint too, when it failed, so that a rerun resumes).

Runs keep the local executor's contract: keyed and idempotent (a recorded run is not sent at
all), a failure costs one run (and the runs that stand on it), a rerun resumes. The driver
takes the same run locks as local runs, and holds back a run until no run in flight trains
one it stands on, so a shared teacher trains once. The data root must be readable at the same
path on every node (a shared folder).
"""

from __future__ import annotations

import fcntl
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from ecbench.bench.errors import ConfigError
from ecbench.bench.records import find_record, load_record, write_json
from ecbench.bench.sweep.jobs import JobResult, job_log
from ecbench.bench.training.plan import key_done

SHIPPED_FOLDERS = ("results/runs", "work/models", "work/checkpoints")


@dataclass
class RayConfig:
    address: str = ""  # a cluster (ray://HOST:10001, auto); "" starts a Ray on this machine
    threads: int = 1  # CPUs each run declares (and its torch threads)
    devices: str = "auto"  # each run's --device: cpu, cuda, auto (CUDA where the node has one)
    runs_per_gpu: int = 1  # on GPUs: each run declares 1 / runs_per_gpu of one
    results_dir: str = "ecbench-results"  # the driver's folders, where everything comes back
    workdir: str = ".ecbench"

    def __post_init__(self) -> None:
        if self.threads < 1 or self.runs_per_gpu < 1:
            raise ValueError("--threads and --runs-per-gpu must be at least 1")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'ecbench[ray]'") from None
    return ray


def with_folders(args: tuple[str, ...], results: Path, workdir: Path) -> list[str]:
    """A run's arguments with its `--results` and `--workdir` moved to `results`, `workdir`."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--results", "--workdir"):
            skip = True
            continue
        out.append(arg)
    return out + ["--results", str(results), "--workdir", str(workdir)]


def run_in_scratch(args: tuple[str, ...], files: dict[str, bytes]) -> dict[str, Any]:
    """A Ray task's body: `ecbench run ARGS` in a scratch folder seeded with `files` (paths
    relative to it); returns its exit status, output, and the files it wrote or changed."""
    with tempfile.TemporaryDirectory(prefix="ecbench-ray-") as scratch:
        root = Path(scratch)
        for relative, data in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        command = [sys.executable, "-m", "ecbench.bench.cli", "run",
                   *with_folders(args, root / "results", root / "work")]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        written = {}
        for folder in SHIPPED_FOLDERS:
            if folder.endswith("checkpoints") and done.returncode == 0:
                continue  # a finished run's checkpoint is gone or stale
            for path in sorted((root / folder).glob("*")):
                relative = str(path.relative_to(root))
                data = path.read_bytes()
                if path.is_file() and files.get(relative) != data:
                    written[relative] = data
        return {"returncode": done.returncode, "seconds": time.perf_counter() - start,
                "command": shlex.join(command), "stdout": done.stdout, "stderr": done.stderr,
                "node": os.uname().nodename, "scratch": scratch, "files": written}


class RayExecutor:
    """Runs as Ray tasks, scheduled so that a run waits for those it stands on."""

    needs_chains = True  # `ecbench sweep` computes each run's chain of keys for it

    def __init__(self, config: RayConfig) -> None:
        self.config = config
        self.results = Path(config.results_dir)
        self.workdir = Path(config.workdir)

    def run_all(self, jobs: list[tuple[str, ...]], *, logs: Path,
                on_done: Callable[[JobResult], None],
                chains: list[list[str]] | None = None) -> list[JobResult]:
        if chains is None or len(chains) != len(jobs):
            raise ConfigError("the ray executor needs each run's chain of run keys")
        ray = import_ray()
        if not ray.is_initialized():
            local = {} if self.config.address else {"include_dashboard": False}
            ray.init(address=self.config.address or None, log_to_driver=False, **local)
        logs.mkdir(parents=True, exist_ok=True)
        task = ray.remote(run_in_scratch).options(**self._resources(ray), max_retries=1)
        device_args = ("--device", self.config.devices)
        results: dict[int, JobResult] = {}
        pending = list(range(len(jobs)))
        in_flight: dict[Any, tuple[int, list[IO], list[str]]] = {}
        while pending or in_flight:
            busy = {key for _, _, needed in in_flight.values() for key in needed}
            for index in list(pending):
                own = chains[index][-1]
                if self._done(own):
                    pending.remove(index)
                    results[index] = self._reused(index, jobs[index],
                                                  find_record(self.results, own), logs)
                    on_done(results[index])
                    continue
                needed = [key for key in chains[index] if not self._done(key)]
                if busy.intersection(needed):  # a run in flight trains one of them
                    continue
                locks = self._lock(needed)
                if locks is None:  # another process on this machine trains one: later
                    continue
                pending.remove(index)
                busy.update(needed)
                ref = task.remote(jobs[index] + device_args, self._files_for(chains[index]))
                in_flight[ref] = (index, locks, needed)
            if not in_flight:
                time.sleep(1.0)  # every pending run waits on another process's lock
                continue
            done, _ = ray.wait(list(in_flight), num_returns=1)
            index, locks, _ = in_flight.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as exc:  # the task itself died (its node was lost): one run
                outcome = {"returncode": -1, "seconds": 0.0, "stdout": "", "files": {},
                           "stderr": f"the Ray task failed: {exc}\n", "command": "",
                           "node": "?", "scratch": ""}
            finally:
                for handle in locks:
                    handle.close()
            results[index] = self._received(index, jobs[index], outcome, logs)
            on_done(results[index])
        return [results[i] for i in range(len(jobs))]

    def _resources(self, ray: Any) -> dict[str, Any]:
        gpus = ray.cluster_resources().get("GPU", 0) if self.config.devices != "cpu" else 0
        return {"num_cpus": self.config.threads,
                "num_gpus": 1.0 / self.config.runs_per_gpu if gpus else 0}

    def _done(self, key: str) -> bool:
        """Whether run `key` is recorded here with its model (so it is reused, not run)."""
        return key_done(key, self.results, self.workdir)

    def _lock(self, chain: list[str]) -> list[IO] | None:
        """The local executor's run locks for every run of `chain`, without waiting; None
        (and nothing held) when another process holds one."""
        folder = self.workdir / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        held = []
        for key in chain:
            handle = open(folder / f"{key}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                for other in held:
                    other.close()
                return None
            held.append(handle)
        return held

    def _files_for(self, chain: list[str]) -> dict[str, bytes]:
        """What a task needs from here: the records and models of the runs it stands on, and
        its own checkpoint (a killed run resumes from it)."""
        files = {}
        for key in chain[:-1]:
            record = find_record(self.results, key)
            model = self.workdir / "models" / f"{key}.pt"
            if record is not None and model.is_file():
                files[f"results/runs/{record.name}"] = record.read_bytes()
                files[f"work/models/{model.name}"] = model.read_bytes()
        checkpoint = self.workdir / "checkpoints" / f"{chain[-1]}.pt"
        if checkpoint.is_file():
            files[f"work/checkpoints/{checkpoint.name}"] = checkpoint.read_bytes()
        return files

    def _received(self, index: int, args: tuple[str, ...], outcome: dict[str, Any],
                  logs: Path) -> JobResult:
        """Write what a task sent back into this machine's folders; its result."""
        record = None
        for relative, data in outcome["files"].items():
            folder, name = relative.rsplit("/", 1)
            target = (self.results if folder.startswith("results") else self.workdir) \
                / folder.split("/", 1)[1] / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if folder == "results/runs":
                self._point_home(target, outcome)
        log = job_log(logs, index, args)
        log.write_text(f"# on Ray node {outcome['node']}\n$ {outcome['command']}\n"
                       f"{outcome['stderr']}{outcome['stdout']}")
        for line in outcome["stdout"].splitlines():
            if line.startswith("record:"):
                name = Path(line.split(":", 1)[1].strip()).name
                record = str(self.results / "runs" / name)
        if outcome["returncode"] == 0:  # the run's own checkpoint is spent
            for relative in outcome["files"]:
                if relative.startswith("work/models/"):
                    key = Path(relative).stem
                    (self.workdir / "checkpoints" / f"{key}.pt").unlink(missing_ok=True)
        return JobResult(args, outcome["returncode"], outcome["seconds"], log, record)

    def _point_home(self, record_file: Path, outcome: dict[str, Any]) -> None:
        """A record's model paths name the task's scratch folder: point them here instead."""
        record = load_record(record_file)
        scratch = outcome["scratch"] + "/work"
        for holder in [record, *record.get("beside", {}).values()]:
            if isinstance(holder.get("model_file"), str):
                holder["model_file"] = holder["model_file"].replace(scratch, str(self.workdir))
        write_json(record_file, record)

    @staticmethod
    def _reused(index: int, args: tuple[str, ...], recorded: Path, logs: Path) -> JobResult:
        log = job_log(logs, index, args)
        log.write_text(f"reusing the record of an identical run: {recorded}\n")
        return JobResult(args, 0, 0.0, log, str(recorded))
