"""Packed sessions: the real positions of a padded batch as one flat list of tokens.

Every per-position operation of a transformer (projections, feed-forward, LayerNorm, dropout)
runs on real tokens only; only the attention core needs the padded [B, L] layout. Session data
is mostly short with a long tail, so a padded batch is often 80% padding: packing removes that
work without changing the result for any real position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def occurrences(index: torch.Tensor, size: int) -> torch.Tensor:
    """How often each of 0 .. size-1 occurs in the int64 `index`: a `bincount` that exports to
    ONNX (bincount's length does not)."""
    return index.new_zeros(size).index_add(0, index, torch.ones_like(index))


@dataclass(frozen=True)
class PackedSessions:
    """The tokens of a batch and where they sit. Packed (`from_items`): the real positions
    only. On the grid (`every_position`): all B * L positions, padding included and read out
    as a session of its own (`session_of` == B, so readouts take `buckets` sessions and keep
    the first B); no shape then depends on the data, which XNNPACK requires of a tensor."""

    batch: int
    length: int
    flat_index: torch.Tensor  # [N] index of each position in the flattened [B * L] grid
    session_of: torch.Tensor  # [N] the session each token belongs to (B: padding)
    position: torch.Tensor  # [N] its position within the session
    items: torch.Tensor  # [N] its item id
    row: torch.Tensor  # [N] its row of the grid (the session, for real tokens)
    grid: bool = False

    @property
    def buckets(self) -> int:
        """Sessions a readout sums into: the batch, and on the grid one more for padding."""
        return self.batch + 1 if self.grid else self.batch

    @classmethod
    def from_items(cls, item_seq: torch.Tensor) -> "PackedSessions":
        """Pack a left-aligned, zero-padded batch [B, L]."""
        batch, length = item_seq.shape
        flat_items = item_seq.reshape(-1)
        # a boolean index, not nonzero().squeeze(1) or masked_select: ExecuTorch mishandles
        # nonzero's [N, 1] output and ONNX has no masked_select
        flat_index = torch.arange(flat_items.shape[0], device=item_seq.device)[flat_items > 0]
        session_of = torch.div(flat_index, length, rounding_mode="floor")
        # a subtraction, not `% length`: the ONNX exporter cannot take a symbolic modulus
        return cls(batch, length, flat_index, session_of, flat_index - session_of * length,
                   flat_items[flat_index], session_of)

    @classmethod
    def every_position(cls, item_seq: torch.Tensor) -> "PackedSessions":
        """Every position of a left-aligned, zero-padded batch [B, L] as a token."""
        batch, length = item_seq.shape
        flat_items = item_seq.reshape(-1)
        flat_index = torch.arange(flat_items.shape[0], device=item_seq.device)
        row = torch.div(flat_index, length, rounding_mode="floor")
        session_of = torch.where(flat_items > 0, row, torch.full_like(row, batch))
        return cls(batch, length, flat_index, session_of, flat_index - row * length, flat_items,
                   row, grid=True)

    def pad(self, tokens: torch.Tensor) -> torch.Tensor:
        """Place tokens [N, D] back into a zero-padded [B, L, D] tensor (differentiable)."""
        if self.grid:
            real = (self.items > 0).unsqueeze(-1).to(tokens.dtype)
            return (tokens * real).view(self.batch, self.length, -1)
        grid = tokens.new_zeros(self.batch * self.length, tokens.shape[-1])
        # in place on a fresh buffer: the out-of-place index_copy would copy the zeros once more
        return grid.index_copy_(0, self.flat_index, tokens).view(self.batch, self.length, -1)

    def last(self) -> torch.Tensor:
        """The index among the tokens of each session's last item: [B] (sessions not empty)."""
        if self.grid:
            raise ValueError("last() needs the packed tokens (from_items), not the grid")
        return torch.cumsum(occurrences(self.session_of, self.batch), 0) - 1

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """The real positions of a [B, L, ...] tensor as tokens [N, ...]."""
        # indexed by (session, position), not through a reshape: the attention output is a
        # transposed view, which ExecuTorch's lowering would turn into an invalid view
        return padded[self.row, self.position]
