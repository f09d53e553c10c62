"""The soft-attention session readout of the paper's Eq. 3 (from SR-GNN), and its relatives."""

from __future__ import annotations

import torch
from torch import nn


def session_mean(tokens: torch.Tensor, session_of: torch.Tensor, num_sessions: int) -> torch.Tensor:
    """Mean of the packed tokens [N, D] of each session: [num_sessions, D] (zero if none)."""
    # counted with index_add, not bincount: bincount's length does not export to ONNX
    count = tokens.new_zeros(num_sessions, 1).index_add(
        0, session_of, tokens.new_ones(tokens.shape[0], 1)).clamp(min=1)
    total = tokens.new_zeros(num_sessions, tokens.shape[-1]).index_add(0, session_of, tokens)
    return total / count


class SoftAttentionReadout(nn.Module):
    """theta_s = sum_t alpha_t x_t, alpha_t = f^T sigmoid(W1 x_s* + W2 x_t + c)   (Eq. 3).

    x_s* is the mean of the x_t over the positions selected by `mask`. The mask may select a
    sub-session (only the hot or only the cold items, Eq. 18); a session with no selected
    position reads out as the zero vector.

    The baselines use the same additive attention with another query in place of x_s*, of
    `query_dim` columns: the last item (SR-GNN), the last GRU state (NARM's local encoder), or
    the last item beside the session mean (STAMP). The weights are not normalised (no softmax),
    as in those papers.
    """

    def __init__(self, dim: int, query_dim: int | None = None, key_tanh: bool = False) -> None:
        super().__init__()
        self.w1 = nn.Linear(query_dim or dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=True)  # its bias is c
        self.f = nn.Linear(dim, 1, bias=False)
        # W2 tanh(x_t) in the gate instead of W2 x_t: the paper's released EODRec code
        self.key_tanh = key_tanh

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Readout of padded hidden states [B, L, D] over the positions where `mask` is true."""
        sessions, _ = torch.nonzero(mask, as_tuple=True)
        return self.packed(hidden[mask], sessions, hidden.shape[0])

    def packed(self, tokens: torch.Tensor, session_of: torch.Tensor, num_sessions: int,
               query: torch.Tensor | None = None) -> torch.Tensor:
        """The same readout over packed tokens [N, D], token i belonging to `session_of[i]`.

        `query` [num_sessions, query_dim] replaces the session mean x_s* when given.
        """
        if query is None:
            query = session_mean(tokens, session_of, num_sessions)  # x_s*
        keys = torch.tanh(tokens) if self.key_tanh else tokens
        gate = torch.sigmoid(self.w1(query).index_select(0, session_of) + self.w2(keys))
        alpha = self.f(gate)  # [N, 1]
        return tokens.new_zeros(num_sessions, tokens.shape[-1]).index_add(0, session_of,
                                                                           alpha * tokens)
