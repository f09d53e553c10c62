"""Full-ranking accuracy: HR, NDCG and MRR at K over all real items, ties counted against us."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

CUTOFFS = (5, 10, 20)


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target among the real items (column 0, padding, excluded).

    rank = 1 + the number of *other* real items scoring at least as high as the target, so a tie
    never helps. A NaN target score ranks last.
    """
    real = scores[:, 1:]
    target_scores = scores.gather(1, targets.view(-1, 1))
    ranks = (real >= target_scores).sum(1)  # counts the target itself once
    return torch.where(torch.isnan(target_scores.squeeze(1)),
                       torch.full_like(ranks, real.shape[1]), ranks)


def metrics_from_ranks(ranks: np.ndarray, cutoffs: Sequence[int] = CUTOFFS) -> dict[str, float]:
    """HR@K, NDCG@K (1/log2(rank+1)) and MRR@K in percent, each case counted once."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in cutoffs:
        hit = ranks <= k
        # Plain floats, not numpy scalars: these go into checkpoints, which torch.load only
        # reads back (weights_only=True) when they hold no numpy objects.
        out[f"HR@{k}"] = float(100.0 * hit.mean())
        out[f"NDCG@{k}"] = float(100.0 * np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
        out[f"MRR@{k}"] = float(100.0 * np.where(hit, 1.0 / ranks, 0.0).mean())
    return out


def popularity_ranks(popularity: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Ranks of a session-blind popularity ranking (the weakest sensible baseline)."""
    real = np.sort(popularity[1:])
    # number of real items with popularity >= the target's
    return len(real) - np.searchsorted(real, popularity[targets], side="left")


def metrics_by_case(ranks: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Metrics over each group of test cases (boolean masks over `ranks`), with the group's
    share of the cases in percent; an empty group gets only its share."""
    out: dict[str, dict[str, float]] = {}
    for name, mask in groups.items():
        share = {"share": float(100.0 * mask.mean()) if len(mask) else 0.0}
        out[name] = {**share, **metrics_from_ranks(ranks[mask])} if mask.any() else share
    return out
