"""(prefix, next item) examples and their padded batches, against plain Python."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from ecbench.bench.data.batching import Examples
from ecbench.bench.data.sessions import Sessions

session_lists = st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=15),
                         min_size=1, max_size=12)


def naive_pairs(lists):
    return [(s[:i], s[i]) for s in lists for i in range(1, len(s))]


def naive_row(prefix, max_len, width):
    kept = prefix[-max_len:]
    return kept + [0] * (width - len(kept))


def test_examples_from_sessions_are_the_sequence_split_pairs():
    lists = [[5, 6, 7], [1], [2, 2], [9, 8, 7, 6]]
    ex = Examples.from_sessions(Sessions.from_lists(lists))
    got = [(ex.items[a:b].tolist(), int(t)) for a, b, t in zip(ex.starts, ex.ends, ex.targets)]
    assert got == [([5], 6), ([5, 6], 7), ([2], 2), ([9], 8), ([9, 8], 7), ([9, 8, 7], 6)]


@settings(max_examples=60, deadline=None)
@given(session_lists)
def test_examples_from_sessions_match_naive_pairs(lists):
    ex = Examples.from_sessions(Sessions.from_lists(lists))
    got = [(ex.items[a:b].tolist(), int(t)) for a, b, t in zip(ex.starts, ex.ends, ex.targets)]
    assert got == naive_pairs(lists)
    assert len(ex) == sum(len(s) - 1 for s in lists)


@settings(max_examples=60, deadline=None)
@given(session_lists, st.integers(1, 8), st.randoms(use_true_random=False))
def test_batch_keeps_the_last_max_len_items_left_aligned_and_zero_padded(lists, max_len, rnd):
    pairs = naive_pairs(lists)
    if not pairs:
        return
    ex = Examples.from_sessions(Sessions.from_lists(lists))
    index = np.array([rnd.randrange(len(pairs)) for _ in range(rnd.randint(1, 10))])
    batch = ex.batch(index, max_len)
    width = max(min(len(pairs[i][0]), max_len) for i in index)
    expected = [naive_row(pairs[i][0], max_len, width) for i in index]
    assert batch.items.dtype == torch.int64
    assert batch.items.tolist() == expected
    assert batch.lengths.tolist() == [min(len(pairs[i][0]), max_len) for i in index]
    assert batch.targets.tolist() == [pairs[i][1] for i in index]


@settings(max_examples=40, deadline=None)
@given(session_lists, st.integers(1, 20))
def test_test_prefixes_batch_like_training_prefixes(lists, max_len):
    prefixes = Sessions.from_lists(lists)
    labels = np.arange(1, len(lists) + 1)
    ex = Examples.from_prefixes(prefixes, labels)
    batch = ex.batch(np.arange(len(lists)), max_len)
    width = max(min(len(s), max_len) for s in lists)
    assert batch.items.tolist() == [naive_row(s, max_len, width) for s in lists]
    assert batch.targets.tolist() == labels.tolist()


def test_batches_cover_every_example_once_in_the_given_order():
    rng = np.random.default_rng(0)
    lists = [rng.integers(1, 30, size=rng.integers(2, 9)).tolist() for _ in range(40)]
    ex = Examples.from_sessions(Sessions.from_lists(lists))
    order = rng.permutation(len(ex))
    batches = list(ex.batches(16, max_len=50, order=order))
    assert len(batches) == ex.num_batches(16) == -(-len(ex) // 16)
    assert torch.cat([b.targets for b in batches]).tolist() == ex.targets[order].tolist()


def test_real_tmall_batch_matches_naive_truncation(tmall):
    ex = Examples.from_sessions(tmall.train)
    index = np.random.default_rng(0).choice(len(ex), size=200, replace=False)
    batch = ex.batch(index, max_len=5)
    for row, length, i in zip(batch.items.tolist(), batch.lengths.tolist(), index):
        prefix = ex.items[ex.starts[i]:ex.ends[i]].tolist()
        assert row[:length] == prefix[-5:]
        assert all(v == 0 for v in row[length:])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=15), min_size=1, max_size=12),
       st.integers(1, 8))
def test_target_in_prefix_matches_a_naive_check_of_what_the_model_sees(lists, max_len):
    ex = Examples.from_sessions(Sessions.from_lists(lists))
    expected = [target in prefix[-max_len:] for prefix, target in naive_pairs(lists)]
    assert ex.target_in_prefix(max_len).tolist() == expected
