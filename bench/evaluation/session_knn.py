"""Session-kNN (SKNN) and vector-multiplication session-kNN (V-SKNN), Ludewig and Jannach
(UMUAI 2018): a session is recommended the items of the past sessions most like it. No item
table at all; what a phone stores is the past sessions and the inverted index that finds them,
counted here in bytes like a compressor's tables.

SKNN: a session is the set of its items; the neighbours are, among the `sample` most recent
past sessions that share an item with it, the `k` of highest cosine similarity; an item's score
is the summed similarity of the neighbours holding it. V-SKNN weighs the session's items by
position (the session-rec default `div`: the item at position p of L weighs p / L, a repeated
item its latest position) and scores a past session by the weights of the items it shares,
over the number of distinct items in the session. "Recent" is order in the training file, which
the standard preprocessing writes in time order. Everything is sparse-matrix algebra over a
batch of sessions: no Python loop over sessions or items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from ecbench.bench.data.sessions import Sessions
from ecbench.compressors.base import StoredTensor, smallest_unsigned_dtype

METHODS = ("sknn", "vsknn")


@dataclass(frozen=True)
class KNNConfig:
    method: Literal["sknn", "vsknn"] = "vsknn"
    k: int = 100  # neighbours whose items are scored
    sample: int = 500  # the most recent sessions sharing an item that are compared

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.k < 1 or self.sample < 1:
            raise ValueError(f"k and sample must be positive, got k={self.k}, sample={self.sample}")
        if self.k > self.sample:
            raise ValueError(f"k={self.k} neighbours cannot come from a sample of {self.sample}")


def unique_items_matrix(sessions: Sessions, num_items: int, weights: np.ndarray | None = None
                        ) -> sp.csr_matrix:
    """[sessions, num_items]: 1 (or the weight of its latest click) where a session holds an item."""
    rows = np.repeat(np.arange(len(sessions)), sessions.lengths)
    values = np.ones(len(rows)) if weights is None else weights
    # the latest click of an item in a session wins: keep the last of each (row, item)
    order = np.lexsort((np.arange(len(rows)), sessions.items, rows))
    rows, items, values = rows[order], sessions.items[order], values[order]
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = (rows[1:] != rows[:-1]) | (items[1:] != items[:-1])
    matrix = sp.csr_matrix((values[last], (rows[last], items[last])),
                           shape=(len(sessions), num_items))
    matrix.sort_indices()
    return matrix


def click_positions(sessions: Sessions) -> np.ndarray:
    """Each click's 1-based position in its session (V-SKNN's `div` weight is p / L; summing
    the integers and dividing once keeps equal similarities exactly equal, so ties are ties)."""
    session_of = np.repeat(np.arange(len(sessions)), sessions.lengths)
    return (np.arange(len(sessions.items)) - sessions.offsets[session_of] + 1).astype(np.float64)


def keep_last_per_row(matrix: sp.csr_matrix, most: int) -> sp.csr_matrix:
    """Each row's `most` entries of the largest column index (the most recent sessions)."""
    counts = np.diff(matrix.indptr)
    from_end = np.repeat(matrix.indptr[1:], counts) - np.arange(matrix.nnz)  # 1 = last entry
    keep = from_end <= most
    rows = np.repeat(np.arange(matrix.shape[0]), counts)[keep]
    return sp.csr_matrix((matrix.data[keep], (rows, matrix.indices[keep])), shape=matrix.shape)


def top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's `k` largest entries (ties: the more recent session first)."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((-matrix.indices, -matrix.data, rows))
    rank = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    chosen = order[rank < k]
    return sp.csr_matrix((matrix.data[chosen], (rows[chosen], matrix.indices[chosen])),
                         shape=matrix.shape)


class SessionKNN:
    """A fitted session-kNN: the past sessions (items per session) and the inverted index."""

    def __init__(self, train: Sessions, num_items: int, config: KNNConfig) -> None:
        self.config, self.num_items = config, num_items
        self.sessions = unique_items_matrix(train, num_items)  # [past sessions, items] binary
        self.inverted = self.sessions.T.tocsr()  # [items, past sessions]: what shares an item
        self.session_sizes = np.diff(self.sessions.indptr).astype(np.float64)

    def scores(self, prefixes: Sessions) -> np.ndarray:
        """Scores of every item (column 0, padding, is 0) for each prefix: [B, num_items]."""
        query = unique_items_matrix(prefixes, self.num_items)
        shared = (query @ self.inverted).tocsr()  # [B, past sessions]: items in common
        shared.sort_indices()
        shared = keep_last_per_row(shared, self.config.sample)
        sizes = np.diff(query.indptr).astype(np.float64)
        rows = np.repeat(np.arange(shared.shape[0]), np.diff(shared.indptr))
        if self.config.method == "sknn":
            similarity = shared.data / np.sqrt(sizes[rows] * self.session_sizes[shared.indices])
        else:  # the weighted query has the same pattern, so the same entries are sampled
            weighted = unique_items_matrix(prefixes, self.num_items, click_positions(prefixes))
            overlap = (weighted @ self.inverted).tocsr()
            overlap.sort_indices()
            lengths = prefixes.lengths.astype(np.float64)
            similarity = (keep_last_per_row(overlap, self.config.sample).data
                          / (lengths[rows] * sizes[rows]))
        neighbours = top_per_row(sp.csr_matrix((similarity, shared.indices, shared.indptr),
                                               shape=shared.shape), self.config.k)
        out = (neighbours @ self.sessions).toarray()
        out[:, 0] = 0.0
        return out

    def stored(self) -> tuple[StoredTensor, ...]:
        """What a phone keeps to run it: both indices, ids and offsets in their smallest types."""
        past, items = self.sessions.shape
        item_ids = smallest_unsigned_dtype(items - 1).name
        session_ids = smallest_unsigned_dtype(past - 1).name
        nnz = self.sessions.nnz
        return (StoredTensor("session_items", (nnz,), item_ids),
                StoredTensor("session_offsets", (past + 1,), smallest_unsigned_dtype(nnz).name),
                StoredTensor("item_sessions", (nnz,), session_ids),
                StoredTensor("item_offsets", (items + 1,), smallest_unsigned_dtype(nnz).name))


def knn_scores_torch(knn: SessionKNN, prefixes: Sessions) -> torch.Tensor:
    """`scores` as a float32 tensor, for the project's ranking metrics."""
    return torch.from_numpy(knn.scores(prefixes).astype(np.float32, copy=False))
