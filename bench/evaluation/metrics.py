"""Full-ranking accuracy: HR, NDCG and MRR at K over all real items, ties counted against us."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

CUTOFFS = (5, 10, 20)


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target among the real items (column 0, padding, excluded).

    rank = 1 + the number of *other* real items scoring at least as high as the target, so a tie
    never helps; another item's NaN score counts as higher (a broken model is not flattered).
    A NaN target score ranks last.
    """
    real = scores[:, 1:]
    target_scores = scores.gather(1, targets.view(-1, 1))
    ranks = ((real >= target_scores) | torch.isnan(real)).sum(1)  # the target itself once
    return torch.where(torch.isnan(target_scores.squeeze(1)),
                       torch.full_like(ranks, real.shape[1]), ranks)


def tied_with_another(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Whether another real item scores exactly the target's score, [B] bool: a tie that
    `pessimistic_ranks` counts against the model (items sharing a code share every score)."""
    real = scores[:, 1:]
    target_scores = scores.gather(1, targets.view(-1, 1))
    return (real == target_scores).sum(1) > 1  # the target itself once


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


def recency_ranks(item_seq: np.ndarray, targets: np.ndarray, num_real_items: int) -> np.ndarray:
    """Ranks of a model-free session recency ranking: the session's own distinct items, the
    most recently clicked first; every other item ties below them (ranked pessimistically, so
    a label outside the session ranks last). `item_seq` [n, L] is left-aligned, 0 = padding.

    The repeat-click baseline: on Tmall it beats every model of the paper's Table 3.
    """
    item_seq = np.asarray(item_seq)
    width = item_seq.shape[1]
    later = np.triu(np.ones((width, width), dtype=bool), 1)  # later[i, j]: position j after i
    same = item_seq[:, :, None] == item_seq[:, None, :]
    last_click = (item_seq > 0) & ~(same & later).any(axis=2)  # [n, L] an item's last position
    label_at = last_click & (item_seq == np.asarray(targets)[:, None])  # at most one per row
    in_session = label_at.any(axis=1)
    position = label_at.argmax(axis=1)
    newer = (last_click & (np.arange(width) > position[:, None])).sum(axis=1)
    return np.where(in_session, newer + 1, num_real_items)


def metrics_by_case(ranks: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Metrics over each group of test cases (boolean masks over `ranks`), with the group's
    share of the cases in percent; an empty group gets only its share."""
    out: dict[str, dict[str, float]] = {}
    for name, mask in groups.items():
        share = {"share": float(100.0 * mask.mean()) if len(mask) else 0.0}
        out[name] = {**share, **metrics_from_ranks(ranks[mask])} if mask.any() else share
    return out
