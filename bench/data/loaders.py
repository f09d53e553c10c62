"""Loading the standard preprocessed benchmark layout without ever executing a pickle."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np

from ecbench.bench.errors import DataError
from ecbench.bench.data.sessions import SessionDataset, Sessions

TRAIN_FILE = "all_train_seq.txt"
TEST_FILE = "test.txt"
KNOWN_DATASETS = ("tmall", "retailrocket")
DATA_ROOT_ENV = "ECBENCH_DATA"


class _RefusedPickle(pickle.UnpicklingError):
    """The pickle asked for something beyond lists, tuples and ints."""


class _ListsTuplesIntsUnpickler(pickle.Unpickler):
    """Refuses every global, so no pickle can call a function or build an object.

    Lists, tuples and ints need no globals; everything else is rejected afterwards by type checks.
    """

    def find_class(self, module: str, name: str):
        raise _RefusedPickle(f"refers to {module}.{name}; only lists, tuples and ints are allowed")

    def persistent_load(self, pid):
        raise _RefusedPickle("uses persistent ids; only lists, tuples and ints are allowed")


def safe_load(raw: bytes, what: str):
    try:
        return _ListsTuplesIntsUnpickler(io.BytesIO(raw)).load()
    except _RefusedPickle as exc:
        raise DataError(f"{what}: refused pickle: {exc}") from None
    except Exception as exc:  # truncated or corrupt streams raise many types
        raise DataError(f"{what}: malformed pickle ({type(exc).__name__}: {exc})") from None


# A pickle stores each int in at least two bytes, so a file of B bytes holds at most B / 2 item
# ids unless it repeats objects by reference (its memo): a 1 MB pickle naming one long session
# a million times would expand to gigabytes. Past this many ids per byte it is refused.
MAX_IDS_PER_BYTE = 4


def _describe(value) -> str:
    """A short description of a value of any type: never the repr of a nested structure, which
    can be deep enough to overflow the stack or large enough to flood a terminal."""
    kind = f"a {type(value).__name__}"
    if type(value) in (int, float, bool):
        return f"{kind} ({value!r})"
    if isinstance(value, (str, bytes)):
        return f"{kind} ({value[:20]!r}{'...' if len(value) > 20 else ''})"
    return "None" if value is None else kind


def _int_sessions(obj, what: str, budget: int) -> Sessions:
    """Lists (or tuples) of ints as flat sessions; `budget`: the most item ids the file may
    hold (`MAX_IDS_PER_BYTE` x its size), checked before anything is expanded."""
    if not isinstance(obj, (list, tuple)):
        raise DataError(f"{what}: expected a list of sessions, got {_describe(obj)}")
    for i, session in enumerate(obj):
        if type(session) not in (list, tuple):
            raise DataError(f"{what}: session {i} is {_describe(session)}, not a list")
    total = sum(map(len, obj))
    if total > budget:
        raise DataError(f"{what}: {total:,} item ids from a file of {budget // MAX_IDS_PER_BYTE:,} "
                        "bytes: it repeats sessions by reference; refused")
    bad = next(((i, item) for i, session in enumerate(obj) for item in session
                if type(item) is not int), None)
    if bad is not None:
        raise DataError(f"{what}: session {bad[0]} holds {_describe(bad[1])}, not an int id")
    try:
        return Sessions.from_lists(obj)
    except OverflowError:
        raise DataError(f"{what}: an item id does not fit in 64 bits") from None


def _int_labels(obj, what: str, budget: int) -> np.ndarray:
    if not isinstance(obj, (list, tuple)) or any(type(x) is not int for x in obj):
        raise DataError(f"{what}: labels must be a list of ints")
    if len(obj) > budget:
        raise DataError(f"{what}: {len(obj):,} labels from a file of {budget // MAX_IDS_PER_BYTE:,} "
                        "bytes: it repeats them by reference; refused")
    try:
        return np.asarray(obj, dtype=np.int64)
    except OverflowError:
        raise DataError(f"{what}: a label does not fit in 64 bits") from None


def load_standard(folder: str | os.PathLike, name: str | None = None) -> SessionDataset:
    """Read `all_train_seq.txt` (list of sessions) and `test.txt` ((prefixes, labels)) from `folder`."""
    folder = Path(folder)
    name = name or folder.name
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    paths = {f: folder / f for f in (TRAIN_FILE, TEST_FILE)}
    missing = [f for f, p in paths.items() if not p.is_file()]
    if missing:
        raise DataError(f"dataset folder {folder} is missing {', '.join(missing)}")
    raw = {f: p.read_bytes() for f, p in paths.items()}
    checksum = hashlib.sha256(raw[TRAIN_FILE] + b"\0" + raw[TEST_FILE]).hexdigest()

    budget = {f: MAX_IDS_PER_BYTE * len(b) for f, b in raw.items()}
    train_obj = safe_load(raw[TRAIN_FILE], f"{name}/{TRAIN_FILE}")
    train = _int_sessions(train_obj, f"{name}/{TRAIN_FILE}", budget[TRAIN_FILE])
    test_obj = safe_load(raw[TEST_FILE], f"{name}/{TEST_FILE}")
    if not (isinstance(test_obj, (tuple, list)) and len(test_obj) == 2):
        raise DataError(f"{name}/{TEST_FILE}: expected a pair (prefixes, labels)")
    prefixes = _int_sessions(test_obj[0], f"{name}/{TEST_FILE} prefixes", budget[TEST_FILE])
    labels = _int_labels(test_obj[1], f"{name}/{TEST_FILE} labels", budget[TEST_FILE])
    if len(train.items) == 0:
        raise DataError(f"{name}/{TRAIN_FILE}: no items")
    num_items = int(train.items.max()) + 1
    return SessionDataset(name, num_items, train, prefixes, labels, checksum)


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    return Path(data_root or os.environ.get(DATA_ROOT_ENV) or "data")


def resolve_dataset_path(data: str, data_root: str | os.PathLike | None) -> Path:
    """`data` is a folder path, or a dataset name looked up under the data root."""
    path = Path(data)
    if path.is_dir():
        return path
    candidate = resolve_data_root(data_root) / data
    if candidate.is_dir():
        return candidate
    raise DataError(f"no dataset {data!r}: not a folder, and {candidate} does not exist "
                    f"(set --data-root or ${DATA_ROOT_ENV})")
