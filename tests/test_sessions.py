"""Flat session storage, the validation split, hot items and the synthetic generator."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from ecbench.bench.data.batching import Examples
from ecbench.bench.errors import DataError
from ecbench.bench.data.sessions import Sessions, hot_items, item_popularity, split_validation
from ecbench.bench.data.synthetic import SyntheticConfig, generate_sessions, synthetic_dataset
from conftest import TINY_SYNTHETIC
from helpers import random_sessions, sessions_as_lists


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# -- CSR storage -----------------------------------------------------------------------------

def test_from_lists_round_trips(rng):
    lists = random_sessions(rng, 50)
    sessions = Sessions.from_lists(lists)
    assert len(sessions) == 50
    assert sessions_as_lists(sessions) == lists
    np.testing.assert_array_equal(sessions.lengths, [len(s) for s in lists])
    assert sessions.offsets[0] == 0 and sessions.offsets[-1] == len(sessions.items)


def test_from_lists_of_nothing_is_empty():
    sessions = Sessions.from_lists([])
    assert len(sessions) == 0 and len(sessions.items) == 0


def test_select_returns_the_chosen_sessions_in_the_given_order(rng):
    lists = random_sessions(rng, 40)
    indices = np.array([7, 3, 3, 39, 0])
    assert sessions_as_lists(Sessions.from_lists(lists).select(indices)) == [lists[i] for i in indices]


def test_slices_gathers_arbitrary_ranges_of_the_flat_array(rng):
    sessions = Sessions.from_lists(random_sessions(rng, 30))
    n = len(sessions.items)
    starts = rng.integers(0, n, size=25)
    ends = np.minimum(starts + rng.integers(0, 6, size=25), n)
    sliced = sessions.slices(starts, ends)
    flat = sessions.items.tolist()
    assert sessions_as_lists(sliced) == [flat[a:b] for a, b in zip(starts, ends)]


def test_split_points_are_every_prefix_and_next_click(rng):
    lists = random_sessions(rng, 30)
    sessions = Sessions.from_lists(lists)
    starts, ends = sessions.split_points()
    got = [(sessions.items[a:b].tolist(), int(sessions.items[b])) for a, b in zip(starts, ends)]
    expected = [(s[:i], s[i]) for s in lists for i in range(1, len(s))]
    assert got == expected


def test_digest_depends_on_session_boundaries():
    a = Sessions.from_lists([[1, 2], [3]])
    b = Sessions.from_lists([[1], [2, 3]])
    assert a.digest() != b.digest()
    assert a.digest() == Sessions.from_lists([[1, 2], [3]]).digest()


# -- validation split ------------------------------------------------------------------------

def _marked_sessions(rng, n: int) -> Sessions:
    """Session i starts with the marker item 1000 + i, so sessions can be told apart."""
    return Sessions.from_lists([[1000 + i] + s for i, s in
                                enumerate(random_sessions(rng, n, max_len=5, num_items=50))])


def _markers(sessions: Sessions) -> list[int]:
    return sessions.items[sessions.offsets[:-1]].tolist()


def test_random_split_is_disjoint_and_covers_every_session(rng):
    sessions = _marked_sessions(rng, 200)
    split = split_validation(sessions, 0.1, "random", seed=3)
    fit, val = _markers(split.fit), _markers(split.validation)
    assert not set(fit) & set(val)
    assert sorted(fit + val) == _markers(sessions)
    # whole sessions move, contents intact
    original = {m: s for m, s in zip(_markers(sessions), sessions_as_lists(sessions))}
    assert all(original[s[0]] == s for s in sessions_as_lists(split.validation))


def test_random_split_holds_out_the_requested_fraction(rng):
    sessions = _marked_sessions(rng, 237)
    split = split_validation(sessions, 0.1, "random", seed=0)
    assert len(split.validation) == round(237 * 0.1)
    assert len(split.fit) == 237 - len(split.validation)
    assert split.mode == "random" and split.fraction == 0.1


def test_random_split_is_determined_by_its_seed(rng):
    sessions = _marked_sessions(rng, 200)
    a = split_validation(sessions, 0.1, "random", seed=5)
    b = split_validation(sessions, 0.1, "random", seed=5)
    c = split_validation(sessions, 0.1, "random", seed=6)
    assert _markers(a.validation) == _markers(b.validation)
    assert _markers(a.validation) != _markers(c.validation)


def test_last_split_takes_the_tail_in_file_order(rng):
    sessions = _marked_sessions(rng, 100)
    split = split_validation(sessions, 0.2, "last", seed=0)
    assert sessions_as_lists(split.validation) == sessions_as_lists(sessions)[80:]
    assert sessions_as_lists(split.fit) == sessions_as_lists(sessions)[:80]


def test_no_validation_session_is_trained_on(rng):
    sessions = _marked_sessions(rng, 300)
    split = split_validation(sessions, 0.1, "random", seed=1)
    fit = Examples.from_sessions(split.fit)
    trained_markers = set(fit.items[fit.starts].tolist())  # each prefix starts at its session's start
    assert trained_markers <= set(_markers(split.fit))
    assert not trained_markers & set(_markers(split.validation))
    assert not set(fit.targets.tolist()) & set(_markers(split.validation))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_fraction_outside_the_unit_interval_is_rejected(rng, fraction):
    with pytest.raises(DataError, match="validation fraction"):
        split_validation(_marked_sessions(rng, 20), fraction, "random", seed=0)


def test_too_few_sessions_to_hold_out_is_rejected():
    with pytest.raises(DataError, match="too few"):
        split_validation(Sessions.from_lists([[1, 2]]), 0.5, "random", seed=0)


def test_unknown_split_mode_is_rejected(rng):
    with pytest.raises(DataError, match="unknown validation mode"):
        split_validation(_marked_sessions(rng, 20), 0.1, "first", seed=0)


# -- hot items -------------------------------------------------------------------------------

def _naive_hot(lists, num_items, fraction):
    counts = Counter(item for s in lists for item in s)
    ranked = sorted(counts, key=lambda item: (-counts[item], item))
    return set(ranked[:int(len(counts) * fraction)])


@pytest.mark.parametrize("seed", range(5))
def test_hot_items_are_the_top_fifth_of_seen_items_by_clicks(seed):
    rng = np.random.default_rng(seed)
    num_items = 60
    # few distinct counts, so ties at the cut are common
    lists = random_sessions(rng, 40, max_len=6, num_items=num_items - 10)
    mask = hot_items(Sessions.from_lists(lists), num_items, 0.2)
    assert mask.shape == (num_items,)
    assert not mask[0]
    assert set(np.flatnonzero(mask).tolist()) == _naive_hot(lists, num_items, 0.2)


def test_unseen_items_are_never_hot():
    lists = [[1, 1, 1, 2], [2, 3], [4, 5]]
    mask = hot_items(Sessions.from_lists(lists), num_items=20, fraction=0.5)
    assert set(np.flatnonzero(mask).tolist()) == {1, 2}


def test_item_popularity_counts_clicks_and_zeroes_padding():
    pop = item_popularity(Sessions.from_lists([[1, 1, 3], [3, 1]]), num_items=5)
    np.testing.assert_array_equal(pop, [0, 3, 0, 2, 0])


# -- synthetic data --------------------------------------------------------------------------

def test_synthetic_generator_is_deterministic_per_seed():
    a, b = generate_sessions(TINY_SYNTHETIC), generate_sessions(TINY_SYNTHETIC)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    c = generate_sessions(replace(TINY_SYNTHETIC, seed=TINY_SYNTHETIC.seed + 1))
    assert not (len(c.items) == len(a.items) and np.array_equal(c.items, a.items))


def test_synthetic_ids_and_lengths_are_in_range():
    cfg = TINY_SYNTHETIC
    sessions = generate_sessions(cfg)
    assert len(sessions) == cfg.num_sessions
    assert sessions.items.min() >= 1 and sessions.items.max() <= cfg.num_items
    assert sessions.lengths.min() >= 2 and sessions.lengths.max() <= cfg.max_length


def test_synthetic_popularity_is_long_tailed():
    sessions = generate_sessions(TINY_SYNTHETIC)
    counts = np.sort(np.bincount(sessions.items)[1:])[::-1]
    top_tenth = counts[:len(counts) // 10].sum()
    assert top_tenth / counts.sum() > 0.30


def test_synthetic_dataset_is_valid_and_its_test_labels_were_trained_on(tiny_synthetic):
    data = tiny_synthetic
    assert data.name.startswith("synthetic(")
    seen = set(data.train.items.tolist())
    assert set(data.test_labels.tolist()) <= seen
    assert set(data.test_prefixes.items.tolist()) <= seen
    assert len(data.test_prefixes) == len(data.test_labels) > 0


def test_default_synthetic_dataset_is_named_plainly():
    assert synthetic_dataset(SyntheticConfig()).name == "synthetic"
