"""STAMP (Liu et al., KDD 2018): attention over the session steered by the last item and the
session mean, two MLP cells, trilinear scoring."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecbench.backbones.base import Backbone
from ecbench.backbones.init import InitOptions
from ecbench.backbones.packing import PackedSessions
from ecbench.backbones.readout import SoftAttentionReadout, session_mean
from ecbench.compressors import Compressor


@dataclass
class STAMPConfig(InitOptions):
    """STAMP has no options of its own (the original uses no dropout); it takes the paper's
    general settings (Section 6.1.3: batch 100, Adam 1e-3, L2 1e-5, U(-0.1, 0.1))."""


class STAMP(Backbone):
    """alpha_i = W0^T sigmoid(W1 x_i + W2 x_t + W3 m_s + b_a), m_a = sum_i alpha_i x_i,
    h_s = tanh(W_s m_a + b_s), h_t = tanh(W_t x_t + b_t); the session vector is h_s * h_t, so
    an item's score <h_s, h_t, x_i> is STAMP's trilinear product (before the softmax)."""

    def __init__(self, compressor: Compressor, config: STAMPConfig) -> None:
        super().__init__(compressor)
        dim = compressor.dim
        self.config = config
        # w1 = [W2 W3] on the query [x_t; m_s], w2 = W1 with bias b_a, f = W0
        self.attention = SoftAttentionReadout(dim, query_dim=2 * dim)
        self.mlp_session = nn.Linear(dim, dim)  # W_s, b_s
        self.mlp_last = nn.Linear(dim, dim)  # W_t, b_t
        config.apply(self)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        packed = PackedSessions.from_items(item_seq)
        items = self.compressor(packed.items)  # x_i of the real positions
        last = items.index_select(0, packed.last())  # x_t
        mean = session_mean(items, packed.session_of, packed.batch)  # m_s
        attended = self.attention.packed(items, packed.session_of, packed.batch,
                                         query=torch.cat([last, mean], 1))  # m_a
        return torch.tanh(self.mlp_session(attended)) * torch.tanh(self.mlp_last(last))
