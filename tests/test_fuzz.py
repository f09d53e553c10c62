"""Property-based fuzzing of what reads user input: the dataset loader, the record readers and
the command-line options. Every input is either accepted with the right counts or refused
with the project's one-line error type; nothing else escapes."""

from __future__ import annotations

import json
import pickle
import tracemalloc

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecbench.bench.data.loaders import load_standard
from ecbench.bench.errors import ConfigError, DataError, RecordError
from ecbench.bench.records import load_record
from ecbench.bench.training.config import RunConfig
from ecbench.compressors import UnknownEntryError

# what loading one of these tiny files may take at the most (ids up to 2**70 are refused
# before any table is sized by them)
MEMORY_LIMIT = 16 * 2**20
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

ids = st.one_of(st.integers(min_value=1, max_value=60), st.integers(min_value=-5, max_value=0),
                st.integers(min_value=2**40, max_value=2**70))
junk = st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.none(), st.booleans(),
                 st.lists(st.integers(), max_size=3))
sessions = st.lists(st.lists(st.one_of(ids, ids, ids, junk), max_size=6), max_size=12)
test_pairs = st.tuples(sessions, st.lists(st.one_of(ids, junk), max_size=12))


def write(folder, train_obj, test_obj, protocol):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all_train_seq.txt").write_bytes(pickle.dumps(train_obj, protocol=protocol))
    (folder / "test.txt").write_bytes(pickle.dumps(test_obj, protocol=protocol))


def valid_ids(obj) -> bool:
    return all(type(x) is int and x >= 1 for s in obj for x in s)


@FUZZ
@given(train=sessions, test=test_pairs, protocol=st.integers(min_value=0, max_value=5))
def test_the_loader_accepts_with_the_right_counts_or_refuses_in_one_error(tmp_path, train, test,
                                                                       protocol):
    folder = tmp_path / f"fuzz-{abs(hash((str(train), str(test), protocol)))}"
    write(folder, train, test, protocol)
    tracemalloc.start()
    try:
        data = load_standard(folder)
    except DataError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"loading took {peak:,} bytes"
    assert valid_ids(train) and len(data.train) == len(train)
    assert data.num_items == max(x for s in train for x in s) + 1
    assert len(data.test_labels) == len(test[1]) == len(data.test_prefixes)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_random_bytes_as_a_dataset_are_refused_in_one_error(tmp_path, raw):
    folder = tmp_path / f"bytes-{abs(hash(raw))}"
    folder.mkdir()
    (folder / "all_train_seq.txt").write_bytes(raw)
    (folder / "test.txt").write_bytes(raw)
    with pytest.raises(DataError):
        load_standard(folder)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), json_values.map(
    lambda v: json.dumps(v).encode())))
def test_a_record_file_reads_as_an_object_or_one_error(tmp_path, content):
    path = tmp_path / f"record-{abs(hash(content))}.json"
    path.write_bytes(content)
    try:
        record = load_record(path)
    except RecordError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(record, dict)


config_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                          st.lists(st.integers(), max_size=2))
config_keys = st.sampled_from(["data", "compressor", "backbone", "dim", "epochs", "seed",
                               "ratio", "lr", "select_on", "bogus", "max_len"])


@FUZZ
@given(config=st.dictionaries(config_keys, config_values, max_size=6))
def test_a_records_config_builds_a_run_config_or_one_error(config):
    try:
        RunConfig.from_record({"config": config}, "fuzz.json")
    except RecordError as exc:
        assert str(exc).startswith("fuzz.json: ")


flags = st.sampled_from(["--dim", "--epochs", "--compressor", "--backbone", "--M", "--K",
                         "--ratio", "--layers", "--kd", "--beta", "--eta", "--seed", "--lr",
                         "--teacher-table", "--kd-reduction", "--threads", "--bogus", "--tau"])
values = st.one_of(st.sampled_from(["0", "-1", "1", "4", "32", "0.5", "1e9", "nan", "full",
                                    "ccode", "tt", "sttd", "gru4rec", "live", "sum", "x", ""]),
                   st.text(max_size=4))


@FUZZ
@given(args=st.lists(st.tuples(flags, values), max_size=5))
def test_command_line_options_give_a_config_or_one_error(args):
    from ecbench.bench.cli.main import run_config_of

    tokens = [token for pair in args for token in pair]
    try:
        config = run_config_of(tokens)
    except (ConfigError, click.ClickException, UnknownEntryError):
        return
    assert isinstance(config, RunConfig)
