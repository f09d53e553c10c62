"""Session data in flat (CSR) arrays, and the split into validation and training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from ecbench.bench.errors import DataError


@dataclass(frozen=True)
class Sessions:
    """Variable-length sessions stored as one flat item array and offsets (CSR).

    Session i is `items[offsets[i]:offsets[i+1]]`, in click order.
    """

    items: np.ndarray  # int64 [total clicks]
    offsets: np.ndarray  # int64 [n + 1], offsets[0] == 0

    @classmethod
    def from_lists(cls, sessions: Sequence[Sequence[int]]) -> "Sessions":
        lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
        offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = [item for session in sessions for item in session]
        items = np.asarray(flat, dtype=np.int64) if flat else np.zeros(0, dtype=np.int64)
        return cls(items, offsets)

    def to_lists(self) -> list[list[int]]:
        """The sessions as lists of ints (the standard layout's pickles)."""
        flat, offsets = self.items.tolist(), self.offsets.tolist()
        return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def session(self, i: int) -> np.ndarray:
        return self.items[self.offsets[i]:self.offsets[i + 1]]

    def select(self, indices: np.ndarray) -> "Sessions":
        """The sessions at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return self.slices(self.offsets[indices], self.offsets[indices + 1])

    def slices(self, starts: np.ndarray, ends: np.ndarray) -> "Sessions":
        """New sessions `items[starts[i]:ends[i]]` (vectorised gather)."""
        lengths = np.asarray(ends, dtype=np.int64) - starts
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Sessions(self.items[gather], offsets)

    def split_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Sequence splitting: for every click after a session's first, the flat index of the
        session's start and of that click. `items[start:end]` is a prefix, `items[end]` its label."""
        session_of = np.repeat(np.arange(len(self)), self.lengths)
        position = np.arange(len(self.items)) - self.offsets[session_of]
        ends = np.flatnonzero(position > 0)
        return self.offsets[session_of[ends]], ends

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.offsets.astype("<i8").tobytes())
        h.update(self.items.astype("<i8").tobytes())
        return h.hexdigest()


def drop_items(sessions: Sessions, keep: np.ndarray) -> tuple[Sessions, np.ndarray]:
    """Clicks on items outside the boolean mask `keep` (by item id) removed, then sessions
    left shorter than two clicks; and the indices of the sessions that stay."""
    kept_clicks = keep[sessions.items]
    session_of = np.repeat(np.arange(len(sessions)), sessions.lengths)
    lengths = np.bincount(session_of[kept_clicks], minlength=len(sessions))
    kept = Sessions(sessions.items[kept_clicks], np.concatenate([[0], np.cumsum(lengths)]))
    staying = np.flatnonzero(lengths >= 2)
    return kept.select(staying), staying


@dataclass(frozen=True)
class SessionDataset:
    """A benchmark: training sessions, test prefixes and their next items.

    Item ids run from 1 to `num_items - 1`; 0 is padding.
    """

    name: str
    num_items: int
    train: Sessions
    test_prefixes: Sessions
    test_labels: np.ndarray
    checksum: str

    def __post_init__(self) -> None:
        validate(self)


# Item ids are dense in the standard layout (1..N). The item table is sized by the largest id,
# so a stray huge id would ask for gigabytes; ids this much sparser than dense are refused.
MAX_ID_SPARSITY = 4


def check_dense_ids(data: SessionDataset) -> None:
    """Refuse, before anything is sized by it, an item count far beyond the distinct training
    ids (a stray id of 5e7 among 40,000 items), naming the id and the session it is in."""
    if len(data.train.items) == 0 or data.train.items.min() < 1:
        return  # reported by the checks that follow
    distinct = len(np.unique(data.train.items))
    if data.num_items - 1 <= MAX_ID_SPARSITY * distinct + 1000:
        return
    largest = int(data.train.items.max())
    position = int(np.argmax(data.train.items))
    session = int(np.searchsorted(data.train.offsets, position, side="right") - 1)
    raise DataError(f"{data.name}: item id {largest:,} (training session {session}) is far "
                    f"beyond the {distinct:,} distinct ids: ids must be numbered 1..N; a table "
                    f"sized by it would hold {largest:,} rows")


def validate(data: SessionDataset) -> None:
    """Reject data no model can be trained or scored on, with a message naming the problem."""
    name = data.name
    if len(data.train) == 0:
        raise DataError(f"{name}: no training sessions")
    if len(data.test_prefixes) == 0:
        raise DataError(f"{name}: no test cases")
    if len(data.test_prefixes) != len(data.test_labels):
        raise DataError(f"{name}: {len(data.test_prefixes)} test prefixes but "
                        f"{len(data.test_labels)} labels")
    for part, lengths in (("training session", data.train.lengths),
                          ("test prefix", data.test_prefixes.lengths)):
        empty = np.flatnonzero(lengths == 0)
        if len(empty):
            raise DataError(f"{name}: {len(empty)} empty {part}s (first at index {empty[0]})")
    check_dense_ids(data)
    for part, ids in (("training sessions", data.train.items),
                      ("test prefixes", data.test_prefixes.items),
                      ("test labels", data.test_labels)):
        if ids.min() < 1:
            raise DataError(f"{name}: item id {ids.min()} in {part}: ids must be positive "
                            "(0 is padding)")
        if ids.max() >= data.num_items:
            raise DataError(f"{name}: item id {ids.max()} in {part} is out of range: the "
                            f"training sessions define ids 1..{data.num_items - 1}")
    seen = np.zeros(data.num_items, dtype=bool)
    seen[data.train.items] = True
    unseen = np.flatnonzero(~seen[data.test_labels])
    if len(unseen):
        raise DataError(f"{name}: {len(unseen)} test labels never occur in training (first: "
                        f"item {data.test_labels[unseen[0]]} of test case {unseen[0]})")


ValidationMode = Literal["random", "last"]


@dataclass(frozen=True)
class Split:
    """Training sessions divided into the sessions trained on and the validation sessions."""

    fit: Sessions
    validation: Sessions
    mode: str
    fraction: float


def split_validation(train: Sessions, fraction: float, mode: ValidationMode, seed: int) -> Split:
    """Hold out `fraction` of the training *sessions* for model selection.

    `random` samples them with `seed` (the paper's protocol); `last` takes the last sessions in file
    order, which in the standard preprocessing are the latest, like the test set. Splitting by
    session means no prefix of a validation session is ever trained on.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    n = len(train)
    n_val = max(1, int(round(n * fraction)))
    if n_val >= n:
        raise DataError(f"{n} training sessions are too few to hold out {fraction:.0%}")
    if mode == "random":
        order = np.random.default_rng(seed).permutation(n)
        val_idx, fit_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    elif mode == "last":
        val_idx, fit_idx = np.arange(n - n_val, n), np.arange(n - n_val)
    else:
        raise DataError(f"unknown validation mode {mode!r} (random or last)")
    return Split(train.select(fit_idx), train.select(val_idx), mode, fraction)


def hot_items(sessions: Sessions, num_items: int, fraction: float = 0.2) -> np.ndarray:
    """Boolean mask over item ids: the top `fraction` of the items seen in `sessions` by clicks.

    Ties at the cut are broken by item id so the set is deterministic.
    """
    counts = np.bincount(sessions.items, minlength=num_items)
    counts[0] = 0
    seen = np.flatnonzero(counts)
    n_hot = int(len(seen) * fraction)
    order = seen[np.lexsort((seen, -counts[seen]))]
    mask = np.zeros(num_items, dtype=bool)
    mask[order[:n_hot]] = True
    return mask


def item_popularity(sessions: Sessions, num_items: int) -> np.ndarray:
    """Click counts per item id (padding 0)."""
    counts = np.bincount(sessions.items, minlength=num_items).astype(np.float64)
    counts[0] = 0
    return counts
