"""Packed sessions: the real positions of a padded batch as one flat list of tokens.

Every per-position operation of a transformer (projections, feed-forward, LayerNorm, dropout)
runs on real tokens only; only the attention core needs the padded [B, L] layout. Session data
is mostly short with a long tail, so a padded batch is often 80% padding: packing removes that
work without changing the result for any real position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
        flat_index = torch.nonzero(flat_items > 0).squeeze(1)
        return cls(batch, length, flat_index, torch.div(flat_index, length, rounding_mode="floor"),
                   flat_index % length, flat_items[flat_index])

    def pad(self, tokens: torch.Tensor) -> torch.Tensor:
        """Place tokens [N, D] back into a zero-padded [B, L, D] tensor (differentiable)."""
        grid = tokens.new_zeros(self.batch * self.length, tokens.shape[-1])
        # in place on a fresh buffer: the out-of-place index_copy would copy the zeros once more
        return grid.index_copy_(0, self.flat_index, tokens).view(self.batch, self.length, -1)

    def last(self) -> torch.Tensor:
        """The index among the tokens of each session's last item: [B] (sessions not empty)."""
        counts = torch.bincount(self.session_of, minlength=self.batch)
        return torch.cumsum(counts, 0) - 1

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """The real positions of a [B, L, D] tensor as tokens [N, D]."""
        return padded.reshape(self.batch * self.length, -1).index_select(0, self.flat_index)
