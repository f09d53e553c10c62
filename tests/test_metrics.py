"""Full-ranking metrics: pessimistic ranks with ties, the formulas, the popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecbench.bench.evaluation.metrics import (CUTOFFS, metrics_from_ranks, pessimistic_ranks,
                                              popularity_ranks, tied_with_another)


def brute_force_rank(row: list[float], target: int) -> int:
    """1 + the other real items (column 0 excluded) scoring at least as high as the target."""
    t = row[target]
    if math.isnan(t):
        return len(row) - 1
    return 1 + sum(1 for j in range(1, len(row)) if j != target and row[j] >= t)


def test_a_label_tied_with_another_real_item_is_flagged_as_by_a_loop():
    g = torch.Generator().manual_seed(9)
    scores = torch.randint(0, 6, (64, 40), generator=g).float()
    scores[:, 0] = scores[:, 1]  # the padding column never counts
    targets = torch.randint(1, 40, (64,), generator=g)
    expected = [sum(row[j] == row[t] for j in range(1, len(row)) if j != t) > 0
                for row, t in zip(scores.tolist(), targets.tolist())]
    assert tied_with_another(scores, targets).tolist() == expected


@pytest.mark.parametrize("seed", range(4))
def test_ranks_with_many_ties_match_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (64, 40), generator=g).float()  # heavy ties
    targets = torch.randint(1, 40, (64,), generator=g)
    ranks = pessimistic_ranks(scores, targets)
    expected = [brute_force_rank(r, int(t)) for r, t in zip(scores.tolist(), targets.tolist())]
    assert ranks.tolist() == expected


def test_a_tie_never_helps():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5]])
    # all three tied items rank 3rd, none 1st
    for target in (1, 2, 3):
        assert pessimistic_ranks(scores, torch.tensor([target])).item() == 3
    assert pessimistic_ranks(scores, torch.tensor([4])).item() == 4


def test_padding_column_is_never_counted_even_when_it_scores_highest():
    scores = torch.tensor([[99.0, 3.0, 2.0, 1.0], [5.0, 1.0, 5.0, 0.0]])
    ranks = pessimistic_ranks(scores, torch.tensor([1, 2]))
    assert ranks.tolist() == [1, 1]


def test_nan_target_score_ranks_last():
    scores = torch.tensor([[0.0, float("nan"), -5.0, -6.0, -7.0],
                           [0.0, 1.0, float("nan"), 3.0, 4.0]])
    ranks = pessimistic_ranks(scores, torch.tensor([1, 2]))
    assert ranks.tolist() == [4, 4]  # 4 real items


def test_other_items_nan_scores_count_against_the_label():
    """A model that scores items NaN is broken; its NaNs must not lift the label's rank."""
    scores = torch.tensor([[0.0, 5.0, float("nan"), 1.0, float("nan")]])
    assert pessimistic_ranks(scores, torch.tensor([1])).tolist() == [3]


def test_best_possible_rank_is_one_and_worst_is_the_catalogue():
    scores = torch.arange(10.0).view(1, 10)
    assert pessimistic_ranks(scores, torch.tensor([9])).item() == 1
    assert pessimistic_ranks(scores, torch.tensor([1])).item() == 9


def test_metrics_match_direct_formulas():
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 40, size=500)
    got = metrics_from_ranks(ranks)
    assert set(got) == {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in CUTOFFS}
    for k in CUTOFFS:
        hits = [r for r in ranks if r <= k]
        assert got[f"HR@{k}"] == pytest.approx(100 * len(hits) / len(ranks))
        assert got[f"NDCG@{k}"] == pytest.approx(100 * sum(1 / math.log2(r + 1) for r in hits)
                                                 / len(ranks))
        assert got[f"MRR@{k}"] == pytest.approx(100 * sum(1 / r for r in hits) / len(ranks))


def test_metrics_of_perfect_and_hopeless_rankings():
    perfect = metrics_from_ranks(np.ones(10))
    assert all(v == pytest.approx(100.0) for v in perfect.values())
    hopeless = metrics_from_ranks(np.full(10, 21))
    assert all(v == 0.0 for v in hopeless.values())


def test_rank_just_inside_and_outside_a_cutoff():
    m = metrics_from_ranks(np.array([5, 6]), cutoffs=(5,))
    assert m["HR@5"] == pytest.approx(50.0)
    assert m["NDCG@5"] == pytest.approx(50.0 / math.log2(6))
    assert m["MRR@5"] == pytest.approx(50.0 / 5)


def test_popularity_ranks_match_brute_force():
    rng = np.random.default_rng(1)
    popularity = rng.integers(0, 8, size=50).astype(np.float64)  # many ties
    popularity[0] = 1e9  # padding must not count, whatever is stored there
    targets = rng.integers(1, 50, size=200)
    expected = [1 + sum(1 for j in range(1, 50) if j != t and popularity[j] >= popularity[t])
                for t in targets]
    assert popularity_ranks(popularity, targets).tolist() == expected


def test_popularity_ranks_agree_with_scoring_by_popularity():
    rng = np.random.default_rng(2)
    popularity = rng.integers(0, 5, size=30).astype(np.float64)
    targets = rng.integers(1, 30, size=40)
    scores = torch.tensor(popularity, dtype=torch.float32).expand(40, 30)
    np.testing.assert_array_equal(popularity_ranks(popularity, targets),
                                  pessimistic_ranks(scores, torch.from_numpy(targets)).numpy())


def test_metrics_are_plain_python_floats():
    """Metrics go into checkpoints, which torch.load(weights_only=True) only reads back when
    they hold no numpy scalars (a resumed run failed on exactly that)."""
    values = metrics_from_ranks(np.array([1, 3, 30]))
    assert all(type(v) is float for v in values.values())


def test_metrics_by_case_are_the_metrics_of_each_group_with_its_share():
    from ecbench.bench.evaluation.metrics import metrics_by_case

    ranks = np.array([1, 3, 12, 40, 2, 7])
    repeat = np.array([True, True, False, False, True, False])
    groups = {"repeat": repeat, "new": ~repeat, "none": np.zeros(6, dtype=bool)}
    out = metrics_by_case(ranks, groups)
    assert out["repeat"] == {"share": 50.0, **metrics_from_ranks(ranks[repeat])}
    assert out["new"]["HR@10"] == pytest.approx(100 / 3)
    assert out["none"] == {"share": 0.0}
