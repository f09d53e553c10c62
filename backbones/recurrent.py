"""A GRU over left-aligned, zero-padded sessions that never reads the padding (GRU4Rec, NARM)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
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
        """The same for export, which has no packed sequences: the GRU's own equations unrolled
        over `max_len` steps, the input padded to that width by a concatenation (its width stays
        dynamic; ExecuTorch sizes neither a pad by a dynamic amount nor its own decomposition of
        `nn.GRU` by a dynamic batch). Padding follows each session and a GRU is causal, so the
        states up to a session's length are the packed run's; its final state is the state at
        its last item."""
        width = inputs.shape[1]
        zeros = inputs.new_zeros(inputs.shape[0], self.max_len, inputs.shape[2])
        layer_input = torch.cat([inputs, zeros], 1)[:, :self.max_len]  # [B, max_len, D]
        for layer in range(self.gru.num_layers):
            layer_input = self._unrolled_layer(layer_input, layer)
        positions = torch.arange(width, device=inputs.device)
        states = layer_input.index_select(1, positions)  # a slice's strides would pin the width
        real = positions < lengths.unsqueeze(1)
        states = states * real.unsqueeze(2).to(states.dtype)
        final = states[torch.arange(inputs.shape[0], device=inputs.device), lengths - 1]
        return states, final

    def _unrolled_layer(self, inputs: torch.Tensor, layer: int) -> torch.Tensor:
        """One GRU layer step by step (torch.nn.GRU's equations and weights, h_0 = 0):
        r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z}),
        n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h' = (1 - z) n + z h."""
        w_ih, w_hh = getattr(self.gru, f"weight_ih_l{layer}"), getattr(self.gru, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(self.gru, f"bias_ih_l{layer}"), getattr(self.gru, f"bias_hh_l{layer}")
        projected = inputs @ w_ih.t() + b_ih  # every step's input part at once: [B, T, 3H]
        h = inputs.new_zeros(inputs.shape[0], self.hidden_size)
        states = []
        for t in range(inputs.shape[1]):
            h = gru_update(projected[:, t], h, w_hh, b_hh)
            states.append(h)
        return torch.stack(states, 1)


def gru_update(input_gates: torch.Tensor, h: torch.Tensor, weight_hh: torch.Tensor,
               bias_hh: torch.Tensor) -> torch.Tensor:
    """One GRU step in torch's equations from the input's gate terms W_i x + b_i [n, 3H]:
    r, z = sigmoid(x_{r,z} + W_h{r,z} h + b_h{r,z}), n = tanh(x_n + r (W_hn h + b_hn)),
    h' = (1 - z) n + z h. Slices, not chunk(): ExecuTorch's verifier pins the leading size of
    a list-valued operator's outputs (the batch, or a data-dependent count)."""
    size = h.shape[-1]
    hidden = h @ weight_hh.t() + bias_hh
    x_r, x_z, x_n = input_gates[:, :size], input_gates[:, size:2 * size], input_gates[:, 2 * size:]
    h_r, h_z, h_n = hidden[:, :size], hidden[:, size:2 * size], hidden[:, 2 * size:]
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    return (1 - z) * torch.tanh(x_n + r * h_n) + z * h
