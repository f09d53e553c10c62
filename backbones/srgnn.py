"""SR-GNN (Wu et al., AAAI 2019): gated graph neural network steps over each session's item
graph, then a soft-attention readout combined with the last item."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecbench.backbones.base import Backbone
from ecbench.backbones.init import InitOptions
from ecbench.backbones.packing import PackedSessions
from ecbench.backbones.readout import SoftAttentionReadout
from ecbench.backbones.recurrent import gru_update
from ecbench.backbones.session_graph import SessionGraphs
from ecbench.compressors import Compressor


@dataclass
class SRGNNConfig(InitOptions):
    """SR-GNN's options: `gnn_steps` of the gated graph network, 1 as in the original (which has no
    dropout). The general settings are the paper's (Section 6.1.3: batch 100, Adam 1e-3,
    L2 1e-5, U(-0.1, 0.1)); the hidden size is the embedding size, as in SR-GNN."""

    gnn_steps: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gnn_steps < 1:
            raise ValueError(f"gnn_steps must be at least 1, got {self.gnn_steps}")


class GatedGraphStep(nn.Module):
    """One propagation step (SR-GNN Eq. 1-5): a_i = [A_in,i (W_in h + b); A_out,i (W_out h + b)]
    + biases, then the GRU update of h_i by a_i (torch's GRUCell is exactly Eq. 2-5)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.edge_in = nn.Linear(dim, dim)
        self.edge_out = nn.Linear(dim, dim)
        self.bias_in = nn.Parameter(torch.zeros(dim))
        self.bias_out = nn.Parameter(torch.zeros(dim))
        self.cell = nn.GRUCell(2 * dim, dim)

    def forward(self, nodes: torch.Tensor, graphs: SessionGraphs) -> torch.Tensor:
        message = torch.cat([graphs.aggregate_in(self.edge_in(nodes)) + self.bias_in,
                             graphs.aggregate_out(self.edge_out(nodes)) + self.bias_out], 1)
        if torch.compiler.is_exporting():  # GRUCell's own decomposition does not lower to ExecuTorch
            cell = self.cell
            return gru_update(message @ cell.weight_ih.t() + cell.bias_ih, nodes, cell.weight_hh,
                              cell.bias_hh)
        return self.cell(message, nodes)


class SRGNN(Backbone):
    """Node vectors v_i from the item table, `gnn_steps` gated graph steps (weights shared), then
    s_l = v_n (the last item's node), s_g = sum_i alpha_i v_i over the session's positions with
    alpha_i = q^T sigmoid(W1 v_n + W2 v_i + c) (Eq. 6), and s_h = W3 [s_l; s_g] (Eq. 7)."""

    def __init__(self, compressor: Compressor, config: SRGNNConfig) -> None:
        super().__init__(compressor)
        dim = compressor.dim
        self.config = config
        self.gnn = GatedGraphStep(dim)
        self.attention = SoftAttentionReadout(dim)
        self.combine = nn.Linear(2 * dim, dim, bias=False)  # W3
        config.apply(self)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        packed = PackedSessions.from_items(item_seq)
        graphs = (SessionGraphs.from_padded(item_seq, packed) if torch.compiler.is_exporting()
                  else SessionGraphs.from_packed(packed, self.compressor.num_items))
        nodes = self.compressor(graphs.node_item)
        for _ in range(self.config.gnn_steps):
            nodes = self.gnn(nodes, graphs)
        tokens = nodes.index_select(0, graphs.token_node)  # the node of every position
        last = tokens.index_select(0, packed.last())  # s_l
        session = self.attention.packed(tokens, packed.session_of, packed.batch, query=last)
        return self.combine(torch.cat([last, session], 1))
