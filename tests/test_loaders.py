"""Loading the standard pickled layout: real counts, and every way a dataset can be bad."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from ecbench.bench.errors import DataError
from ecbench.bench.data.loaders import load_standard
from helpers import GOOD_TEST, GOOD_TRAIN


# -- the real data ---------------------------------------------------------------------------

def test_tmall_counts_match_the_papers_table(tmall):
    assert len(tmall.train) == 65_286
    assert len(tmall.test_prefixes) == 25_898
    assert len(tmall.test_labels) == 25_898
    assert tmall.num_items == 40_728  # ids 1..40,727 plus padding


def test_tmall_sequence_splitting_gives_the_papers_training_pairs(tmall):
    starts, ends = tmall.train.split_points()
    assert len(ends) == 351_268
    assert len(ends) == int((tmall.train.lengths - 1).sum())


def test_tmall_checksum_is_stable_across_loads(tmall, tmall_folder):
    assert load_standard(tmall_folder).checksum == tmall.checksum


# -- pickles that try to run code ------------------------------------------------------------

class _RunsShell:
    """Unpickling this calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _os_system_payload(sentinel: Path) -> bytes:
    # Hidden inside an otherwise valid list of sessions.
    return pickle.dumps([[1, 2, 3], _RunsShell(f"touch {sentinel}")], protocol=2)


def _builtins_eval_payload(sentinel: Path) -> bytes:
    # Hand-written protocol-0 stream: GLOBAL builtins.eval, MARK, string, TUPLE, REDUCE, STOP.
    code = f"open({str(sentinel)!r}, 'w').close()"
    return b"cbuiltins\neval\n(V" + code.encode() + b"\ntR."


@pytest.mark.parametrize("payload", [_os_system_payload, _builtins_eval_payload],
                         ids=["reduce-os-system", "global-builtins-eval"])
def test_payloads_are_live_when_loaded_with_plain_pickle(tmp_path, payload):
    """Control: the payloads used below really do execute under a bare pickle.loads."""
    sentinel = tmp_path / "control"
    pickle.loads(payload(sentinel))
    assert sentinel.exists()


@pytest.mark.parametrize("payload", [_os_system_payload, _builtins_eval_payload],
                         ids=["reduce-os-system", "global-builtins-eval"])
@pytest.mark.parametrize("where", ["train", "test"])
def test_code_running_pickle_is_refused_and_never_executed(make_dataset, tmp_path, payload, where):
    sentinel = tmp_path / "SENTINEL"
    if where == "train":
        folder = make_dataset("evil", test=GOOD_TEST, train_bytes=payload(sentinel))
    else:
        folder = make_dataset("evil", train=GOOD_TRAIN, test_bytes=payload(sentinel))
    with pytest.raises(DataError, match="refused pickle"):
        load_standard(folder)
    assert not sentinel.exists()


# -- wrong shapes and types ------------------------------------------------------------------

@pytest.mark.parametrize("intruder,kind", [({"a": 1}, "dict"), ("12", "str"), (3.0, "float")])
def test_non_list_session_is_rejected(make_dataset, intruder, kind):
    folder = make_dataset("bad", GOOD_TRAIN + [intruder], GOOD_TEST)
    with pytest.raises(DataError, match=f"session 5 is a {kind}"):
        load_standard(folder)


@pytest.mark.parametrize("item,kind", [(2.0, "float"), ("2", "str"), (True, "bool")])
def test_non_int_item_is_rejected(make_dataset, item, kind):
    folder = make_dataset("bad", GOOD_TRAIN + [[1, item]], GOOD_TEST)
    with pytest.raises(DataError, match=f"session 5 holds a {kind} .*, not an int id"):
        load_standard(folder)


def test_dict_instead_of_session_list_is_rejected(make_dataset):
    folder = make_dataset("bad", {"sessions": GOOD_TRAIN}, GOOD_TEST)
    with pytest.raises(DataError, match="expected a list of sessions, got a dict"):
        load_standard(folder)


def test_test_file_that_is_not_a_pair_is_rejected(make_dataset):
    folder = make_dataset("bad", GOOD_TRAIN, GOOD_TEST[0])
    with pytest.raises(DataError, match="expected a pair"):
        load_standard(folder)


def test_truncated_pickle_is_a_data_error(make_dataset):
    raw = pickle.dumps(GOOD_TRAIN, protocol=4)
    folder = make_dataset("cut", test=GOOD_TEST, train_bytes=raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut/all_train_seq.txt: malformed pickle .*truncated"):
        load_standard(folder)


def test_missing_test_file_is_named(make_dataset):
    folder = make_dataset("half", GOOD_TRAIN)
    with pytest.raises(DataError, match="missing test.txt"):
        load_standard(folder)


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_standard(tmp_path / "nowhere")


# -- inconsistent ids ------------------------------------------------------------------------

def test_valid_small_dataset_loads(make_dataset):
    data = load_standard(make_dataset("good", GOOD_TRAIN, GOOD_TEST))
    assert data.num_items == 7
    assert data.name == "good"
    np.testing.assert_array_equal(data.test_labels, GOOD_TEST[1])


def test_negative_id_is_rejected(make_dataset):
    folder = make_dataset("neg", GOOD_TRAIN + [[4, -3]], GOOD_TEST)
    with pytest.raises(DataError, match=r"item id -3 in training sessions: ids must be positive"):
        load_standard(folder)


def test_padding_id_zero_is_rejected(make_dataset):
    folder = make_dataset("zero", GOOD_TRAIN, ([[1, 0]], [3]))
    with pytest.raises(DataError, match=r"item id 0 in test prefixes: .*0 is padding"):
        load_standard(folder)


def test_test_id_beyond_the_training_ids_is_out_of_range(make_dataset):
    folder = make_dataset("range", GOOD_TRAIN, ([[1, 2], [9]], [3, 4]))
    with pytest.raises(DataError, match=r"item id 9 in test prefixes is out of range.*1\.\.6"):
        load_standard(folder)


def test_test_label_beyond_the_training_ids_is_out_of_range(make_dataset):
    folder = make_dataset("range", GOOD_TRAIN, ([[1, 2]], [7]))
    with pytest.raises(DataError, match=r"item id 7 in test labels is out of range"):
        load_standard(folder)


def test_empty_training_session_is_rejected(make_dataset):
    folder = make_dataset("empty", GOOD_TRAIN[:2] + [[]] + GOOD_TRAIN[2:], GOOD_TEST)
    with pytest.raises(DataError, match=r"1 empty training sessions \(first at index 2\)"):
        load_standard(folder)


def test_empty_test_prefix_is_rejected(make_dataset):
    folder = make_dataset("empty", GOOD_TRAIN, ([[1], []], [3, 4]))
    with pytest.raises(DataError, match=r"empty test prefix"):
        load_standard(folder)


def test_test_label_never_seen_in_training_is_rejected(make_dataset):
    train = [[1, 3], [3, 1, 4]]  # id 2 is inside the range but never clicked
    folder = make_dataset("unseen", train, ([[1], [3]], [3, 2]))
    with pytest.raises(DataError, match=r"1 test labels never occur in training.*item 2 of test "
                                        r"case 1"):
        load_standard(folder)


def test_label_count_must_match_prefix_count(make_dataset):
    folder = make_dataset("count", GOOD_TRAIN, ([[1], [2]], [3]))
    with pytest.raises(DataError, match="2 test prefixes but 1 labels"):
        load_standard(folder)
