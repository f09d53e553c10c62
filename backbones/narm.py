"""NARM (Li et al., CIKM 2017): a GRU's last state (global) beside attention over its states
(local), scored bilinearly against the items."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecbench.backbones.base import Backbone
from ecbench.backbones.dropout import FastDropout, check_dropout
from ecbench.backbones.packing import PackedSessions
from ecbench.backbones.readout import SoftAttentionReadout
from ecbench.backbones.recurrent import GRUOptions, SessionGRU
from ecbench.compressors import Compressor


@dataclass
class NARMConfig(GRUOptions):
    """NARM's options, at the original paper's values where the EODRec paper is silent.

    `hidden_size` 0 means the embedding size; `embedding_dropout` (0.25) acts on the item
    vectors fed to the GRU and `dropout` (0.5) on [c_g; c_l] before the bilinear map, as in
    NARM. The general settings (batch 100, Adam 1e-3, L2 1e-5, U(-0.1, 0.1), full-softmax
    cross-entropy) are the paper's (Section 6.1.3).
    """

    embedding_dropout: float = 0.25
    dropout: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_dropout("embedding_dropout", self.embedding_dropout)
        check_dropout("dropout", self.dropout)


class NARM(Backbone):
    """c_g = h_t (global encoder); c_l = sum_j alpha_tj h_j with alpha_tj = v^T sigmoid(A1 h_t +
    A2 h_j) over the session's real positions (local encoder); the session vector is B [c_g; c_l],
    so that an item's score emb_i^T B [c_g; c_l] is NARM's bilinear decoder."""

    def __init__(self, compressor: Compressor, config: NARMConfig, max_len: int) -> None:
        super().__init__(compressor)
        dim = compressor.dim
        self.config = config
        self.embedding_dropout = FastDropout(config.embedding_dropout)
        self.gru = SessionGRU(dim, config, max_len)
        self.max_len = max_len  # the width an export unrolls over: its longest session
        hidden = self.gru.hidden_size
        self.local = SoftAttentionReadout(hidden)  # w1 = A1 (on h_t), w2 = A2, f = v
        self.dropout = FastDropout(config.dropout)
        self.bilinear = nn.Linear(2 * hidden, dim, bias=False)  # B
        config.apply(self)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        packed = PackedSessions.from_items(item_seq)
        states, c_global = self.gru(self.embedding_dropout(self.compressor(item_seq)),
                                    (item_seq > 0).sum(1))
        c_local = self.local.packed(packed.unpad(states), packed.session_of, packed.batch,
                                    query=c_global)
        return self.bilinear(self.dropout(torch.cat([c_global, c_local], 1)))
