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


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted((Path(results_dir) / "runs").glob("*.json")):
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
