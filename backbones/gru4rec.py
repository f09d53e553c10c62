"""GRU4Rec (Hidasi et al., ICLR 2016): a GRU over the session, its last state as the session vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecbench.backbones.base import Backbone
from ecbench.backbones.dropout import FastDropout, check_dropout
from ecbench.backbones.recurrent import GRUOptions, SessionGRU
from ecbench.compressors import Compressor


@dataclass
class GRU4RecConfig(GRUOptions):
    """GRU4Rec's options.

    `hidden_size` 0 means the embedding size (the item table's dim), so the last state is scored
    against the items directly; another size adds a linear map to dim. `dropout` acts on the
    GRU's output (the original's hidden-layer dropout, tuned there between 0 and 0.5; 0.25 here).
    The original's session-parallel mini-batches and ranking losses (TOP1, BPR) give way to the
    benchmark's common training (prefix examples, full-softmax cross-entropy) at the paper's
    general settings (Section 6.1.3: batch 100, Adam 1e-3, L2 1e-5, U(-0.1, 0.1)), which the
    paper applies to all its baselines.
    """

    dropout: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        check_dropout("dropout", self.dropout)


class GRU4Rec(Backbone):
    """h_t = GRU(x_t, h_{t-1}) over the session's item vectors; the session vector is h_last."""

    def __init__(self, compressor: Compressor, config: GRU4RecConfig, max_len: int) -> None:
        super().__init__(compressor)
        dim = compressor.dim
        self.config = config
        self.gru = SessionGRU(dim, config, max_len)
        self.max_len = max_len  # the width an export unrolls over: its longest session
        self.dropout = FastDropout(config.dropout)
        hidden = self.gru.hidden_size
        self.output = nn.Identity() if hidden == dim else nn.Linear(hidden, dim, bias=False)
        config.apply(self)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        _, last = self.gru(self.compressor(item_seq), (item_seq > 0).sum(1))
        return self.output(self.dropout(last))
