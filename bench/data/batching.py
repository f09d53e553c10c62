"""(prefix, next item) examples over flat session arrays, and vectorised padded batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ecbench.bench.data.sessions import Sessions


@dataclass(frozen=True)
class Batch:
    items: torch.Tensor  # [B, L] int64, left-aligned, 0 = padding
    lengths: torch.Tensor  # [B] int64
    targets: torch.Tensor  # [B] int64


@dataclass(frozen=True)
class Examples:
    """Example i is the prefix `items[starts[i]:ends[i]]` and the label `targets[i]`.

    Prefixes are never materialised: a batch gathers the last `max_len` items of each prefix
    straight from the flat array.
    """

    items: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    targets: np.ndarray

    @classmethod
    def from_sessions(cls, sessions: Sessions) -> "Examples":
        """Sequence splitting: (s[:i], s[i]) for i = 1 .. l-1 of every session."""
        starts, ends = sessions.split_points()
        return cls(sessions.items, starts, ends, sessions.items[ends])

    @classmethod
    def from_prefixes(cls, prefixes: Sessions, labels: np.ndarray) -> "Examples":
        return cls(prefixes.items, prefixes.offsets[:-1], prefixes.offsets[1:],
                   np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, index: np.ndarray, max_len: int) -> Batch:
        """Pad the last `max_len` items of each selected prefix into a [B, L] matrix."""
        ends = self.ends[index]
        lengths = np.minimum(ends - self.starts[index], max_len)
        width = int(lengths.max())
        positions = np.arange(width)
        flat = (ends - lengths)[:, None] + positions
        valid = positions < lengths[:, None]
        items = np.where(valid, self.items[np.where(valid, flat, 0)], 0)
        return Batch(torch.from_numpy(items), torch.from_numpy(lengths),
                     torch.from_numpy(self.targets[index]))

    def batches(self, batch_size: int, max_len: int, order: np.ndarray | None = None
                ) -> Iterator[Batch]:
        order = np.arange(len(self)) if order is None else order
        for lo in range(0, len(order), batch_size):
            yield self.batch(order[lo:lo + batch_size], max_len)

    def target_in_prefix(self, max_len: int) -> np.ndarray:
        """Whether each example's label is among the last `max_len` items of its prefix (what
        the model sees): a repeat click, [n] bool, without a loop over examples."""
        lengths = np.minimum(self.ends - self.starts, max_len)
        example = np.repeat(np.arange(len(self)), lengths)
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = (self.ends - lengths)[example] + np.arange(offsets[-1]) - offsets[example]
        hits = self.items[flat] == self.targets[example]
        return np.bincount(example[hits], minlength=len(self)) > 0

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)
