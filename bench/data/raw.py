"""The field's raw click logs into the standard layout, preprocessed as SR-GNN does.

Formats (`RAW_FORMATS`), as their publishers distribute them:
- `diginetica`: CIKM Cup 2016 `train-item-views.csv`, `;`-separated with a header
  (session_id;user_id;item_id;timeframe;eventdate): clicks ordered by timeframe, a session
  dated by its eventdate (a day);
- `yoochoose`: RecSys Challenge 2015 `yoochoose-clicks.dat`, `,`-separated, no header
  (session_id,timestamp,item_id,category), ISO 8601 timestamps;
- `retailrocket`: RetailRocket views grouped into sessions, tab-separated with a header
  (timestamp, user_id, item_id, session_id), unix seconds.

The steps are those of SR-GNN's `datasets/preprocess.py` (Wu et al., AAAI 2019), which DHCN,
COTREC and GCE-GNN reuse:
1. clicks grouped into sessions, each in time order (ties in file order); a session's time is
   its latest click's;
2. sessions of one click dropped; then items clicked fewer than `min_support` times in what is
   left, and sessions left with fewer than two clicks;
3. split by time: sessions later than the latest session's time less `test_days` days are the
   test set, earlier ones training; a session exactly at the boundary is in neither, as in
   SR-GNN;
4. items numbered 1..n in the order the training sessions, by time, first click them; test
   clicks on items training never saw dropped, then test sessions shorter than two clicks;
5. test sessions sequence-split into (prefix, next item) cases; training sessions written
   whole (`all_train_seq.txt`), as the layout has them.

`fraction` keeps the most recent part of the training sessions (YOOCHOOSE 1/64) before step 4.
Ours numbers the items of what is kept; SR-GNN keeps the whole training set's numbering, so
its 1/64 split names items that never occur in it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ecbench.bench.data.loaders import TEST_FILE, TRAIN_FILE
from ecbench.bench.data.sessions import Sessions, drop_items
from ecbench.bench.data.synthetic import sequence_split
from ecbench.bench.errors import DataError
from ecbench.bench.records import atomic_write_bytes

DAY = 86400.0
METADATA_FILE = "prepare.json"


@dataclass(frozen=True)
class ClickLog:
    """One row a click: its session, its item, the key that orders a session's clicks, and the
    time (seconds) that dates the session."""

    sessions: np.ndarray  # int64
    items: np.ndarray  # int64
    order: np.ndarray  # float64
    times: np.ndarray  # float64


@dataclass(frozen=True)
class RawFormat:
    delimiter: str
    header: tuple[str, ...] | None  # the header line's fields, or None when there is none
    columns: dict[str, int]  # session, item, order, time -> column index
    parse_time: Callable[[list[str]], np.ndarray]  # strings -> seconds
    test_days: float  # SR-GNN's default split


def _day_seconds(values: list[str]) -> np.ndarray:
    return np.asarray(values, dtype="datetime64[D]").astype("datetime64[s]").astype(np.float64)


def _iso_seconds(values: list[str]) -> np.ndarray:
    # YOOCHOOSE writes UTC with a trailing Z, which numpy's parser no longer takes
    stripped = [v[:-1] if v.endswith("Z") else v for v in values]
    return np.asarray(stripped, dtype="datetime64[ms]").astype(np.float64) / 1e3


def _number_seconds(values: list[str]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


RAW_FORMATS: dict[str, RawFormat] = {
    "diginetica": RawFormat(";", ("session_id", "user_id", "item_id", "timeframe", "eventdate"),
                            {"session": 0, "item": 2, "order": 3, "time": 4}, _day_seconds, 7),
    "yoochoose": RawFormat(",", None, {"session": 0, "item": 2, "order": 1, "time": 1},
                           _iso_seconds, 1),
    "retailrocket": RawFormat("\t", ("timestamp", "user_id", "item_id", "session_id"),
                              {"session": 3, "item": 2, "order": 0, "time": 0},
                              _number_seconds, 7),
}


def raw_format(fmt: str) -> RawFormat:
    if fmt not in RAW_FORMATS:
        raise DataError(f"unknown raw format {fmt!r}; choose from {', '.join(RAW_FORMATS)}")
    return RAW_FORMATS[fmt]


def read_clicks(path: str | Path, fmt: str) -> ClickLog:
    """The clicks of a raw log in format `fmt`; a malformed row is named by its line."""
    spec, path = raw_format(fmt), Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    width = max(spec.columns.values()) + 1
    fields: dict[int, list[str]] = {column: [] for column in set(spec.columns.values())}
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter=spec.delimiter)
        first_line = 1
        if spec.header is not None:
            header = tuple(h.strip() for h in next(rows, ()))
            if header[:len(spec.header)] != spec.header:
                raise DataError(f"{path}: line 1 is not the {fmt} header "
                                f"{spec.delimiter.join(spec.header)!r}")
            first_line = 2
        try:
            for row in rows:
                if len(row) < width:
                    raise DataError(f"{path}: line {rows.line_num}: {len(row)} fields, "
                                    f"a {fmt} row has {width} or more")
                for column, values in fields.items():
                    values.append(row[column])
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: line {rows.line_num}: {exc}") from None
    # a format that orders and dates its clicks by one stamp parses that column once
    converters = {"session": _ids, "item": _ids, "time": spec.parse_time,
                  "order": spec.parse_time if spec.columns["order"] == spec.columns["time"]
                  else _number_seconds}
    parsed: dict[tuple[int, Callable], np.ndarray] = {}
    columns = {}
    for name, column in spec.columns.items():
        key = (column, converters[name])
        if key not in parsed:
            try:
                parsed[key] = converters[name](fields[column])
            except (ValueError, OverflowError):
                bad = _first_bad(fields[column], converters[name])
                raise DataError(f"{path}: line {first_line + bad}: {name} "
                                f"{fields[column][bad]!r} is not readable") from None
        columns[name] = parsed[key]
    return ClickLog(columns["session"], columns["item"], columns["order"], columns["time"])


def _ids(values: list[str]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _first_bad(values: list[str], convert: Callable[[list[str]], np.ndarray]) -> int:
    """The index of the first value `convert` refuses (only called once the whole failed)."""
    for i, value in enumerate(values):
        try:
            convert([value])
        except (ValueError, OverflowError):
            return i
    return 0


def _sha256(path: Path) -> str:
    """The file's digest, read in chunks (a raw log can be gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Prepared:
    train: Sessions  # whole training sessions, items numbered 1..num_items - 1
    test_prefixes: Sessions
    test_labels: np.ndarray
    num_items: int  # with the padding id 0


def preprocess(log: ClickLog, *, test_days: float, min_support: int = 5,
               fraction: float = 1.0) -> Prepared:
    """SR-GNN's preprocessing (the module docstring), vectorised over clicks and sessions."""
    if test_days <= 0:
        raise DataError(f"--test-days must be positive, got {test_days}")
    if min_support < 1:
        raise DataError(f"--min-support must be at least 1, got {min_support}")
    if not 0 < fraction <= 1:
        raise DataError(f"--fraction must be in (0, 1], got {fraction}")
    if len(log.items) == 0:
        raise DataError("the raw log holds no clicks")
    # 1. sessions in time order; items renamed 0..U-1 (raw ids can be 10^9: no table by them)
    by_click = np.lexsort((log.order, log.sessions))  # stable: ties keep file order
    _, items = np.unique(log.items[by_click], return_inverse=True)
    session_ids = log.sessions[by_click]
    starts = np.flatnonzero(np.r_[True, session_ids[1:] != session_ids[:-1]])
    sessions = Sessions(items.astype(np.int64), np.r_[starts, len(items)].astype(np.int64))
    dates = np.maximum.reduceat(log.times[by_click], starts)
    appearance = np.minimum.reduceat(by_click, starts)  # where each session first shows
    # 2. one-click sessions, then rare items, then short sessions
    kept = np.flatnonzero(sessions.lengths >= 2)
    sessions, dates, appearance = sessions.select(kept), dates[kept], appearance[kept]
    support = np.bincount(sessions.items, minlength=items.max() + 1)
    sessions, kept = drop_items(sessions, support >= min_support)
    dates, appearance = dates[kept], appearance[kept]
    if len(sessions) == 0:
        raise DataError(f"no session keeps two clicks on items clicked {min_support} times")
    # 3. split by time, each side by time (ties in file order)
    boundary = dates.max() - test_days * DAY
    chronological = np.lexsort((appearance, dates))
    train = chronological[dates[chronological] < boundary]
    test = chronological[dates[chronological] > boundary]
    if fraction < 1:
        train = train[len(train) - int(len(train) * fraction):]
    if len(train) == 0:
        raise DataError(f"no training session before the last {test_days:g} days; a smaller "
                        "--test-days or a longer log")
    train_sessions = sessions.select(train)
    # 4. items numbered by first click in training; test clicks on unseen items dropped
    numbered, first = np.unique(train_sessions.items, return_index=True)
    number = np.zeros(support.size, dtype=np.int64)
    number[numbered[np.argsort(first)]] = np.arange(1, len(numbered) + 1)
    test_sessions, _ = drop_items(sessions.select(test), number > 0)
    train_sessions = Sessions(number[train_sessions.items], train_sessions.offsets)
    test_sessions = Sessions(number[test_sessions.items], test_sessions.offsets)
    # 5. test cases
    prefixes, labels = sequence_split(test_sessions)
    return Prepared(train_sessions, prefixes, labels, len(numbered) + 1)


def write_standard(folder: str | Path, prepared: Prepared, metadata: dict[str, Any]) -> Path:
    """`all_train_seq.txt` and `test.txt` (pickles of lists and ints, which the loader reads
    without executing anything) and `prepare.json` in a new folder; never over a dataset."""
    folder = Path(folder)
    existing = [f for f in (TRAIN_FILE, TEST_FILE) if (folder / f).exists()]
    if existing:
        raise DataError(f"{folder} already holds {', '.join(existing)}: remove them or choose "
                        "another folder")
    folder.mkdir(parents=True, exist_ok=True)
    test = (prepared.test_prefixes.to_lists(), prepared.test_labels.tolist())
    atomic_write_bytes(folder / TEST_FILE, pickle.dumps(test, protocol=4))
    atomic_write_bytes(folder / TRAIN_FILE, pickle.dumps(prepared.train.to_lists(), protocol=4))
    atomic_write_bytes(folder / METADATA_FILE, json.dumps(metadata, indent=1).encode())
    return folder


def prepare(raw: str | Path, fmt: str, out: str | Path, *, test_days: float | None = None,
            min_support: int = 5, fraction: float = 1.0) -> tuple[Prepared, dict[str, Any]]:
    """Read, preprocess and write one raw log; the written counts and options."""
    test_days = raw_format(fmt).test_days if test_days is None else test_days
    log = read_clicks(raw, fmt)
    prepared = preprocess(log, test_days=test_days, min_support=min_support, fraction=fraction)
    metadata = {
        "source": {"file": Path(raw).name, "format": fmt,
                   "sha256": _sha256(Path(raw)),
                   "clicks": int(len(log.items))},
        "options": {"test_days": test_days, "min_support": min_support, "fraction": fraction},
        "counts": {"train_sessions": len(prepared.train),
                   "train_pairs": int((prepared.train.lengths - 1).sum()),
                   "test_cases": len(prepared.test_labels),
                   "items": prepared.num_items - 1,
                   "average_train_length": float(prepared.train.lengths.mean())},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_standard(out, prepared, metadata)
    return prepared, metadata
