"""Run records: one JSON file per run, written atomically, keyed by the hash of its config."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

RECORD_SCHEMA = 1
# Where a user's runs go unless told otherwise: a folder of their own in the working directory,
# never the project's curated `results/` (whose tables a stray run must not change).
USER_RESULTS = Path(os.environ.get("ECBENCH_RESULTS") or "ecbench-results")
# The project's curated records, in a checkout (an installed wheel has none).
CURATED_RESULTS = Path(__file__).resolve().parent.parent / "results"


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Let `write` fill a temporary file in the same folder, flush it to disk, rename over `path`.

    A reader (or a resumed run) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(payload))


def record_path(results_dir: Path, config: dict[str, Any], key: str) -> Path:
    data = Path(str(config["data"])).name.split("(")[0]
    return Path(results_dir) / "runs" / f"{data}-{config['backbone']}-{config['compressor']}-{key}.json"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


write_record = write_json


def find_record(results_dir: Path, key: str) -> Path | None:
    matches = sorted((Path(results_dir) / "runs").glob(f"*-{key}.json"))
    return matches[0] if matches else None


def load_record(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        return json.load(handle)


MANIFEST = "manifest.json"
RECORD_FOLDERS = ("runs", "bench", "analysis")


def read_manifest(results_dir: Path) -> set[str] | None:
    """The record files (relative to `results_dir`) its `manifest.json` curates, or None for a
    folder without one (a user's results: every record in it counts)."""
    path = Path(results_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = load_record(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError(f"{path}: expected {{\"files\": [relative paths]}}")
    return set(files)


def write_manifest(results_dir: Path, files: set[str]) -> None:
    write_json(Path(results_dir) / MANIFEST, {
        "about": "the records the project's tables and figures are built from "
                 "(`ecbench curate FILE...` adds one); other files here are not read by them",
        "files": sorted(files)})


def record_files(results_dir: Path, folder: str, pattern: str = "*.json") -> list[Path]:
    """The record files RESULTS/folder/pattern, in name order. In a curated results folder
    (one with a manifest) only those its manifest lists, so a run that lands there by
    accident never changes the project's tables."""
    paths = sorted((Path(results_dir) / folder).glob(pattern))
    curated = read_manifest(results_dir)
    if curated is None:
        return paths
    return [p for p in paths if f"{folder}/{p.name}" in curated]


def curate(results_dir: Path, files: list[Path]) -> list[Path]:
    """Add record files to the curated results folder `results_dir`: each is copied into the
    folder of its kind (runs, bench or analysis: the folder it lies in) unless it is there
    already, and listed in the manifest. Every file is checked before anything is written.
    Returns the curated paths."""
    results_dir = Path(results_dir)
    sources = [Path(f) for f in files]
    for source in sources:
        if source.parent.name not in RECORD_FOLDERS or source.suffix != ".json":
            raise ValueError(f"{source}: not a record file (a .json under a folder named "
                             f"{', '.join(RECORD_FOLDERS)})")
        try:
            record = load_record(source)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{source}: not a record (expected a JSON object)")
    curated = read_manifest(results_dir) or set()
    added = []
    for source in sources:
        target = results_dir / source.parent.name / source.name
        if source.resolve() != target.resolve():
            atomic_write_bytes(target, source.read_bytes())
        curated.add(f"{source.parent.name}/{source.name}")
        added.append(target)
    write_manifest(results_dir, curated)
    return added


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    """The run records under RESULTS/runs (the curated ones, in a curated folder)."""
    for path in record_files(results_dir, "runs"):
        yield load_record(path)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_state(root: Path | None = None) -> dict[str, Any]:
    """The commit the code ran from, and whether the working tree's code differed from it
    (`results/`, which runs write while others start, does not count). `root`: the checkout
    [this package's]."""
    root = root or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(threads: int) -> dict[str, Any]:
    import numpy
    import torch

    return {
        # quoted as a shell would need it: "--compressor 'sttd --rank 64'" is one argument
        "command": shlex.join(["ecbench", *sys.argv[1:]]) if sys.argv else None,
        "git": git_state(),
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__),
                     "numpy": numpy.__version__, "ecbench": _own_version()},
        "machine": {"hostname": platform.node(), "platform": platform.platform(),
                    "cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": threads,
                    # how busy the machine was when this started (1, 5, 15 minutes): timings
                    # taken beside other work are slower, though their ratios hold
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }


def _own_version() -> str:
    try:
        from importlib.metadata import version
        return version("ecbench")
    except Exception:
        return "unknown"
