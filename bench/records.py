"""Run records: one JSON file per run, written atomically, keyed by the hash of its config."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from ecbench.bench.errors import RecordError

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


def ensure_writable(folder: Path, what: str = "results") -> None:
    """Refuse, before any work, a folder that cannot take files (read-only, full or not a
    folder), rather than finding out when the work is done and its result has nowhere to go.
    Probes the folder, or the nearest folder above it that exists; creates nothing."""
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(20, "not a folder")
        fd, probe = tempfile.mkstemp(prefix=".ecbench-probe-", dir=probe_in)
        try:
            os.write(fd, b"0" * 4096)  # a full disk fails here, not at mkstemp
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise RecordError(f"{folder}: the {what} folder cannot be written "
                          f"({exc.strerror or exc}); nothing was run") from None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


write_record = write_json


KEY_PATTERN = re.compile(r"[0-9a-f]{16}")


def is_record_key(key: object) -> bool:
    """A run key as `RunConfig.key` makes it: 16 hex digits, safe inside a file name."""
    return isinstance(key, str) and KEY_PATTERN.fullmatch(key) is not None


def record_key(record: dict[str, Any], path: Path | str) -> str:
    """The record's key, checked before it names a file (a key of "../../x" must not steer
    where a model file is looked for)."""
    key = record.get("key")
    if not is_record_key(key):
        raise RecordError(f"{path}: its key {_short(key)} is not a record key (16 hex digits)")
    return key


def find_record(results_dir: Path, key: str) -> Path | None:
    if not is_record_key(key):
        return None  # not a key: no record file can be named by it
    matches = sorted((Path(results_dir) / "runs").glob(f"*-{key}.json"))
    return matches[0] if matches else None


def load_record(path: Path) -> dict[str, Any]:
    """A JSON record (run, benchmark, analysis) or manifest; one line of error otherwise."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise RecordError(f"{path}: nested too deeply to be a record") from None
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(record, dict):
        raise RecordError(f"{path}: not a record (expected a JSON object, found "
                          f"{type(record).__name__})")
    return record


def load_weights(path: Path) -> dict[str, Any]:
    """A model file or checkpoint through torch's safe loader (tensors and plain containers
    only: no pickled code runs); one line of error for anything else."""
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # the safe unpickler and the zip reader raise many types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecordError(f"{path}: not a model file that loads safely ({reason[:200]})"
                          ) from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


MANIFEST = "manifest.json"
RECORD_FOLDERS = ("runs", "bench", "analysis", "baselines")


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


def curate(results_dir: Path, files: list[Path], replace: bool = False) -> list[Path]:
    """Add record files to the curated results folder `results_dir`: each is copied into the
    folder of its kind (runs, bench or analysis: the folder it lies in) unless it is there
    already, and listed in the manifest. Every file is checked before anything is written.
    A curated record of the same name with other content (the same run trained again: its
    key is its config and data) is replaced only with `replace`. Returns the curated paths."""
    results_dir = Path(results_dir)
    sources = [Path(f) for f in files]
    for source in sources:
        if source.parent.name not in RECORD_FOLDERS or source.suffix != ".json":
            raise ValueError(f"{source}: not a record file (a .json under a folder named "
                             f"{', '.join(RECORD_FOLDERS)})")
        load_record(source)  # refuses what is not a JSON object
        target = results_dir / source.parent.name / source.name
        if (not replace and target.is_file() and source.resolve() != target.resolve()
                and target.read_bytes() != source.read_bytes()):
            raise ValueError(f"{target} is curated already with other content (a run trained "
                             "again keeps its name, its key being its config and data; so does "
                             "a benchmark of the same models); keep it, or replace it with "
                             "--replace")
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


_code_state: dict[str, Any] | None = None


def remember_code_state() -> None:
    """Take the commit (and whether the tree was dirty) now, when the process starts and its
    code is imported: a record written at the end of a long run must name the code that ran,
    not what the checkout holds by then."""
    global _code_state
    _code_state = git_state()


def provenance(threads: int) -> dict[str, Any]:
    import numpy
    import torch

    return {
        # quoted as a shell would need it: "--compressor 'sttd --rank 64'" is one argument
        "command": shlex.join(["ecbench", *sys.argv[1:]]) if sys.argv else None,
        "git": dict(_code_state) if _code_state is not None else git_state(),
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
