"""The soft-attention session readout of the paper's Eq. 3 (from SR-GNN)."""

from __future__ import annotations

import torch
from torch import nn


class SoftAttentionReadout(nn.Module):
    """theta_s = sum_t alpha_t x_t, alpha_t = f^T sigmoid(W1 x_s* + W2 x_t + c)   (Eq. 3).

    x_s* is the mean of the x_t over the positions selected by `mask`. The mask may select a
    sub-session (only the hot or only the cold items, Eq. 18); a session with no selected
    position reads out as the zero vector.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=True)  # its bias is c
        self.f = nn.Linear(dim, 1, bias=False)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        count = weights.sum(1).clamp(min=1.0)
        mean = (hidden * weights).sum(1) / count  # x_s*
        gate = torch.sigmoid(self.w1(mean).unsqueeze(1) + self.w2(hidden))
        alpha = self.f(gate) * weights  # [B, L, 1]
        return (alpha * hidden).sum(1)
