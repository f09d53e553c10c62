"""(prefix, next item) examples over flat session arrays, and vectorised padded batches."""

from __future__ import annotations

from dataclasses import dataclass, field
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
class ExampleTensors:
    """`Examples`' flat arrays as tensors on one device, and the batch gather over them."""

    items: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor
    targets: torch.Tensor

    def gather(self, index: torch.Tensor, max_len: int, width: int) -> Batch:
        """The examples `index` as a [B, width] left-aligned, zero-padded batch of the last
        `max_len` items of each prefix (`width` is the longest of those, given by the host)."""
        ends = self.ends[index]
        lengths = torch.clamp(ends - self.starts[index], max=max_len)
        positions = torch.arange(width, device=index.device)
        flat = (ends - lengths).unsqueeze(1) + positions
        valid = positions < lengths.unsqueeze(1)
        items = torch.where(valid, self.items[torch.where(valid, flat, 0)], 0)
        return Batch(items, lengths, self.targets[index])


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
    # copies of the arrays on other devices (`batches(device=...)`), made once
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

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
        lengths = np.minimum(self.ends[index] - self.starts[index], max_len)
        return self._tensors(torch.device("cpu")).gather(
            torch.from_numpy(np.asarray(index, dtype=np.int64)), max_len, int(lengths.max()))

    def batches(self, batch_size: int, max_len: int, order: np.ndarray | None = None,
                device: torch.device | None = None) -> Iterator[Batch]:
        """The examples in `order` (default: as stored), `batch_size` at a time, padded.

        On another `device` the examples are copied there once and every batch is gathered
        there. Each batch's width (its longest prefix, at most `max_len`) is worked out on the
        host for the whole pass at once, so gathering never waits for the device.
        """
        order = np.arange(len(self)) if order is None else np.asarray(order, dtype=np.int64)
        if len(order) == 0:
            return
        starts = np.arange(0, len(order), batch_size)
        lengths = np.minimum(self.ends[order] - self.starts[order], max_len)
        widths = np.maximum.reduceat(lengths, starts)
        tensors = self._tensors(device or torch.device("cpu"))
        order_on = torch.from_numpy(order).to(tensors.items.device, non_blocking=True)
        for lo, width in zip(starts.tolist(), widths.tolist()):
            yield tensors.gather(order_on[lo:lo + batch_size], max_len, width)

    def _tensors(self, device: torch.device) -> "ExampleTensors":
        """The flat arrays as tensors on `device`: views on the CPU, one copy kept elsewhere."""
        key = str(device)
        cached = self._on_device.get(key)
        if cached is None:
            cached = ExampleTensors(*(torch.from_numpy(np.ascontiguousarray(a)).to(device)
                                      for a in (self.items, self.starts, self.ends, self.targets)))
            if device.type != "cpu":
                self._on_device[key] = cached
        return cached

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
