"""`ecbench prepare`: the raw click-log samples preprocessed as SR-GNN's script does, checked
against a plain-Python port of that script's steps; malformed logs refused by line."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from ecbench.bench.data.loaders import load_standard
from ecbench.bench.data.raw import RAW_FORMATS, prepare, preprocess, read_clicks
from ecbench.bench.errors import DataError
from helpers import run_cli

SAMPLES = {"diginetica": "diginetica_sample_train-item-views.csv",
           "yoochoose": "yoochoose_sample_clicks.dat",
           "retailrocket": "retailrocket_sample_events.csv"}


@pytest.fixture
def raw(data_root: Path) -> Path:
    return data_root / "raw"


def reference_rows(path: Path, fmt: str) -> list[tuple[int, int, float, float, int]]:
    """(session, item, order key, session-dating time, line) per row, read with csv."""
    rows = []
    with path.open(newline="") as handle:
        if fmt == "diginetica":
            for line, r in enumerate(csv.DictReader(handle, delimiter=";")):
                day = dt.datetime.strptime(r["eventdate"], "%Y-%m-%d")
                stamp = day.replace(tzinfo=dt.timezone.utc).timestamp()
                rows.append((int(r["session_id"]), int(r["item_id"]), float(r["timeframe"]),
                             stamp, line))
        elif fmt == "yoochoose":
            for line, r in enumerate(csv.reader(handle, delimiter=",")):
                stamp = dt.datetime.strptime(r[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=dt.timezone.utc).timestamp()
                rows.append((int(r[0]), int(r[2]), stamp, stamp, line))
        else:
            for line, r in enumerate(csv.DictReader(handle, delimiter="\t")):
                stamp = float(r["timestamp"])
                rows.append((int(r["session_id"]), int(r["item_id"]), stamp, stamp, line))
    return rows


def reference_preprocess(rows, test_days: float, min_support: int = 5, fraction: float = 1.0):
    """SR-GNN's datasets/preprocess.py, step by step with dicts and loops."""
    clicks, dates, first_line = defaultdict(list), {}, {}
    for session, item, order, stamp, line in rows:
        clicks[session].append((order, line, item))
        dates[session] = max(dates.get(session, stamp), stamp)
        first_line.setdefault(session, line)
    sessions = {s: [item for _, _, item in sorted(c)] for s, c in clicks.items()}
    sessions = {s: seq for s, seq in sessions.items() if len(seq) > 1}
    counts = Counter(item for seq in sessions.values() for item in seq)
    sessions = {s: [i for i in seq if counts[i] >= min_support] for s, seq in sessions.items()}
    sessions = {s: seq for s, seq in sessions.items() if len(seq) >= 2}
    boundary = max(dates[s] for s in sessions) - test_days * 86400
    by_time = sorted(sessions, key=lambda s: (dates[s], first_line[s]))
    train = [s for s in by_time if dates[s] < boundary]
    test = [s for s in by_time if dates[s] > boundary]
    train = train[len(train) - int(len(train) * fraction):]
    number = {}
    for s in train:
        for item in sessions[s]:
            number.setdefault(item, len(number) + 1)
    train_seqs = [[number[i] for i in sessions[s]] for s in train]
    prefixes, labels = [], []
    for s in test:
        seq = [number[i] for i in sessions[s] if i in number]
        for end in range(1, len(seq)):
            prefixes.append(seq[:end])
            labels.append(seq[end])
    return train_seqs, prefixes, labels, len(number)


def as_lists(sessions) -> list[list[int]]:
    return [sessions.session(i).tolist() for i in range(len(sessions))]


@pytest.mark.parametrize("fmt", list(SAMPLES))
@pytest.mark.parametrize("fraction", [1.0, 0.25])
def test_samples_are_preprocessed_as_srgnns_script(raw, fmt, fraction):
    path = raw / SAMPLES[fmt]
    days = RAW_FORMATS[fmt].test_days
    prepared = preprocess(read_clicks(path, fmt), test_days=days, fraction=fraction)
    train, prefixes, labels, num_items = reference_preprocess(reference_rows(path, fmt), days,
                                                              fraction=fraction)
    assert len(train) > 20 and len(labels) > 10  # the samples leave both sides something
    assert as_lists(prepared.train) == train
    assert as_lists(prepared.test_prefixes) == prefixes
    assert prepared.test_labels.tolist() == labels
    assert prepared.num_items == num_items + 1


def test_the_written_layout_loads_and_counts_itself(raw, tmp_path):
    out = tmp_path / "digi"
    prepared, metadata = prepare(raw / SAMPLES["diginetica"], "diginetica", out)
    data = load_standard(out)
    assert data.num_items == prepared.num_items
    assert as_lists(data.train) == as_lists(prepared.train)
    np.testing.assert_array_equal(data.test_labels, prepared.test_labels)
    written = json.loads((out / "prepare.json").read_text())
    assert written["counts"] == metadata["counts"]
    assert written["counts"]["test_cases"] == len(prepared.test_labels)
    assert written["options"]["test_days"] == 7


def test_the_command_writes_a_dataset_and_never_over_one(raw, tmp_path):
    out = tmp_path / "yc"
    args = ["prepare", str(raw / SAMPLES["yoochoose"]), str(out), "--format", "yoochoose"]
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test cases" in done.stdout and (out / "test.txt").is_file()
    before = (out / "test.txt").read_bytes()
    again = run_cli(args + ["--test-days", "2"], tmp_path)
    assert again.returncode != 0 and "already holds" in again.stderr
    assert "Traceback" not in again.stderr
    assert (out / "test.txt").read_bytes() == before


@pytest.mark.parametrize("content, fmt, message", [
    ("session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;10;2016-05-09\n1;NA;x;11;2016-05-09\n",
     "diginetica", "line 3: item 'x'"),
    ("session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;10\n", "diginetica",
     "line 2: 4 fields"),
    ("item,session\n", "diginetica", "line 1 is not the diginetica header"),
    ("1,2014-04-06T20:21:58.444Z,214717095,0\n1,yesterday,214717095,0\n", "yoochoose",
     "line 2: order 'yesterday'"),
    ("timestamp\tuser_id\titem_id\tsession_id\n", "retailrocket", "no clicks"),
])
def test_a_malformed_log_is_refused_by_line(tmp_path, content, fmt, message):
    path = tmp_path / "raw.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        prepare(path, fmt, tmp_path / "out")
    assert not (tmp_path / "out" / "test.txt").exists()


@pytest.mark.parametrize("options, message", [
    ({"test_days": 0}, "--test-days must be positive"),
    ({"min_support": 0}, "--min-support must be at least 1"),
    ({"fraction": 1.5}, "--fraction must be in"),
    ({"test_days": 10_000}, "no training session before the last"),
])
def test_impossible_options_are_refused(raw, tmp_path, options, message):
    with pytest.raises(DataError, match=message):
        prepare(raw / SAMPLES["retailrocket"], "retailrocket", tmp_path / "out", **options)
