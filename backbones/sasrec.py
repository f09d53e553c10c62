"""SASRec with the soft-attention readout (the paper's Eq. 2-3): the teacher's and students' encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ecbench.backbones.base import Backbone
from ecbench.backbones.packing import PackedSessions
from ecbench.backbones.dropout import FastDropout, check_dropout
from ecbench.backbones.init import uniform_init
from ecbench.backbones.readout import SoftAttentionReadout
from ecbench.compressors import Compressor


@dataclass
class SASRecConfig:
    layers: int = 1
    heads: int = 1
    dropout: float = 0.5
    inner_size: int = 0  # feed-forward width; 0 means "same as dim"
    # the feed-forward block's skip connection is LayerNorm(ffn(x) + s x); the paper's released
    # EODRec code has s = 4 (SASRec and OD-Rec's code: 1)
    ffn_residual: float = 1.0
    # the readout's gate sees tanh(x_t) (W2 tanh(x_t), Eq. 3 has W2 x_t), as in the released code
    readout_tanh: bool = False
    weight_init: Literal["uniform", "uniform-all", "torch"] = "uniform"
    init_range: float = 0.1

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ValueError(f"layers must be at least 1, got {self.layers}")
        if self.heads < 1:
            raise ValueError(f"heads must be at least 1, got {self.heads}")
        if self.ffn_residual <= 0:
            raise ValueError(f"ffn_residual must be positive, got {self.ffn_residual}")
        check_dropout("dropout", self.dropout)
        if self.weight_init not in ("uniform", "uniform-all", "torch"):
            raise ValueError(f"weight_init must be uniform, uniform-all or torch, "
                             f"got {self.weight_init!r}")


class CausalSelfAttention(nn.Module):
    dropout_only_training = True  # see backbones.dropout.set_dropout

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, tokens: torch.Tensor, packed: PackedSessions) -> torch.Tensor:
        """Attention among the packed tokens of each session; tokens [N, D] in, [N, D] out."""
        dim = tokens.shape[-1]
        grid = packed.pad(self.qkv(tokens))  # [B, L, 3D]
        q, k, v = grid.view(packed.batch, packed.length, 3, self.heads, dim // self.heads).unbind(2)
        # Sessions are left-aligned, so the causal mask alone keeps every real position away from
        # the padding that follows it.
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(packed.unpad(y.transpose(1, 2)).flatten(1))  # [N, heads, D/heads]


class TransformerBlock(nn.Module):
    """Post-LN block (residual, dropout, LayerNorm), as in SASRec."""

    def __init__(self, dim: int, heads: int, inner: int, dropout: float,
                 ffn_residual: float = 1.0) -> None:
        super().__init__()
        self.ffn_residual = ffn_residual
        self.attention = CausalSelfAttention(dim, heads, dropout)
        self.attention_norm = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = FastDropout(dropout)

    def forward(self, x: torch.Tensor, packed: PackedSessions) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, packed)))
        return self.ffn_norm(self.ffn_residual * x + self.dropout(self.ffn(x)))


class SASRec(Backbone):
    """X^ = X + P, F = Attention(X^), Theta = FNN(F) (Eq. 2), then the soft-attention readout (Eq. 3)."""

    def __init__(self, compressor: Compressor, config: SASRecConfig, max_len: int) -> None:
        super().__init__(compressor)
        dim = compressor.dim
        self.config = config
        self.max_len = max_len
        self.positions = nn.Embedding(max_len, dim)
        self.input_norm = nn.LayerNorm(dim, eps=1e-12)
        self.input_dropout = FastDropout(config.dropout)
        inner = config.inner_size or dim
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, config.heads, inner, config.dropout, config.ffn_residual)
            for _ in range(config.layers))
        self.readout = SoftAttentionReadout(dim, key_tanh=config.readout_tanh)
        self._initialise(config)

    def _initialise(self, config: SASRecConfig) -> None:
        """The paper initialises every learnable parameter from U(-0.1, 0.1) (Section 6.1.3).

        `uniform` applies that to weights and biases and leaves LayerNorm at the identity;
        `uniform-all` also draws the LayerNorm gains, as the paper's released code does.
        The item table is initialised by its compressor.
        """
        if config.weight_init != "torch":
            uniform_init(self, config.init_range,
                         layernorm_identity=config.weight_init == "uniform")

    def tokens(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, PackedSessions]:
        """Representations Theta of Eq. 2 for the real positions only, packed: [N, dim]."""
        length = item_seq.shape[1]
        if length > self.max_len:
            raise ValueError(f"sessions of {length} items exceed max_len={self.max_len}")
        packed = (PackedSessions.every_position(item_seq) if self.every_position
                  else PackedSessions.from_items(item_seq))
        x = self.compressor(packed.items) + self.positions(packed.position)
        x = self.input_dropout(self.input_norm(x))
        for block in self.blocks:
            x = block(x, packed)
        return x, packed

    def hidden_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Per-position representations Theta [B, L, dim] of Eq. 2 (zero at padding)."""
        x, packed = self.tokens(item_seq)
        return packed.pad(x)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x, packed = self.tokens(item_seq)
        return self.readout.packed(x, packed.session_of, packed.buckets)[:packed.batch]

    def encode_views(self, item_seq: torch.Tensor, lengths: torch.Tensor | None,
                     hot_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole-session, hot-only and cold-only readouts (Eq. 3, Eq. 18) from one encoder pass.

        `hot_items` is a boolean vector over item ids. A session without hot (cold) items gets a
        zero hot (cold) readout; the distillation harness decides what to do with those.
        """
        x, packed = self.tokens(item_seq)
        hot = hot_items[packed.items]
        def readout(tokens: torch.Tensor, session_of: torch.Tensor) -> torch.Tensor:
            return self.readout.packed(tokens, session_of, packed.buckets)[:packed.batch]
        return (readout(x, packed.session_of), readout(x[hot], packed.session_of[hot]),
                readout(x[~hot], packed.session_of[~hot]))
