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
    batch: int
    length: int
    flat_index: torch.Tensor  # [N] index of each real position in the flattened [B * L] grid
    session_of: torch.Tensor  # [N] the session each token belongs to
    position: torch.Tensor  # [N] its position within the session
    items: torch.Tensor  # [N] its item id

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
                   flat_items[flat_index])

    def pad(self, tokens: torch.Tensor) -> torch.Tensor:
        """Place tokens [N, D] back into a zero-padded [B, L, D] tensor (differentiable)."""
        grid = tokens.new_zeros(self.batch * self.length, tokens.shape[-1])
        # in place on a fresh buffer: the out-of-place index_copy would copy the zeros once more
        return grid.index_copy_(0, self.flat_index, tokens).view(self.batch, self.length, -1)

    def last(self) -> torch.Tensor:
        """The index among the tokens of each session's last item: [B] (sessions not empty)."""
        return torch.cumsum(occurrences(self.session_of, self.batch), 0) - 1

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """The real positions of a [B, L, ...] tensor as tokens [N, ...]."""
        # indexed by (session, position), not through a reshape: the attention output is a
        # transposed view, which ExecuTorch's lowering would turn into an invalid view
        return padded[self.session_of, self.position]
