"""A GRU over left-aligned, zero-padded sessions that never reads the padding (GRU4Rec, NARM)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ecbench.backbones.init import InitOptions


@dataclass
class GRUOptions(InitOptions):
    """The GRU's size: `hidden_size` 0 means the embedding size (the item table's dim)."""

    hidden_size: int = 0
    layers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_size < 0:
            raise ValueError(f"hidden_size must be 0 (= dim) or positive, got {self.hidden_size}")
        if self.layers < 1:
            raise ValueError(f"layers must be at least 1, got {self.layers}")


class SessionGRU(nn.Module):
    """Runs the GRU on packed sequences: each session for exactly its own length, in one call.

    Every time step runs only the sessions still going, so the work follows the real items, not
    the padded width, and the result of a session does not depend on the batch's padding.
    """

    def __init__(self, input_dim: int, options: GRUOptions, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.hidden_size = options.hidden_size or input_dim
        self.gru = nn.GRU(input_dim, self.hidden_size, options.layers, batch_first=True)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs [B, L, D] and lengths [B] (each >= 1) -> (states [B, L, H], zero at padding;
        the last layer's final state of each session [B, H])."""
        if torch.compiler.is_exporting():
            return self._padded(inputs, lengths)
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, final = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=inputs.shape[1])
        return states, final[-1]

    def _padded(self, inputs: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same over `max_len` steps, for export, which has no packed sequences and unrolls
        a GRU over a fixed number of steps (the input's width stays dynamic). Padding follows
        each session and a GRU is causal, so the states up to a session's length are the
        packed run's; its final state is the state at its last item."""
        width = inputs.shape[1]
        states, _ = self.gru(F.pad(inputs, (0, 0, 0, self.max_len - width)))
        states = states[:, :width]
        real = torch.arange(width, device=inputs.device) < lengths.unsqueeze(1)
        states = states * real.unsqueeze(2).to(states.dtype)
        final = states[torch.arange(inputs.shape[0], device=inputs.device), lengths - 1]
        return states, final
