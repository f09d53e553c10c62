"""The backbone contract: session encoders that take their item vectors from a compressor."""

from __future__ import annotations

import torch
from torch import nn

from ecbench.backbones.repeat import HEADS
from ecbench.compressors import Compressor


class Backbone(nn.Module):
    """Maps padded sessions [B, L] (left-aligned, 0 = padding) to session vectors [B, dim].

    Scores always come from the compressor (`compressor.score`), so a compressed table changes
    nothing but how items are stored; a backbone with a repeat head (`enable_repeat`) then
    scores the session's own items apart.
    """

    # Every position of a batch a token, padding included (`PackedSessions.every_position`),
    # so that no shape depends on the data: ExecuTorch's XNNPACK takes no other. Set on the
    # ExecuTorch form (`DeployedRecommender.for_executorch`); SASRec honours it, the other
    # backbones still pack their real tokens.
    every_position: bool = False

    def __init__(self, compressor: Compressor) -> None:
        super().__init__()
        self.compressor = compressor
        self.repeat: nn.Module | None = None

    def enable_repeat(self, kind: str, recencies: int) -> None:
        """Score the session's own items apart (`backbones.repeat`): `bonus` or `mixture`."""
        if kind not in HEADS:
            raise ValueError(f"unknown repeat head {kind!r}; choose from {', '.join(HEADS)}")
        self.repeat = HEADS[kind](recencies, self.dim)

    @property
    def dim(self) -> int:
        return self.compressor.dim

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_views(self, item_seq: torch.Tensor, lengths: torch.Tensor,
                     hot_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole-session, hot-only and cold-only session vectors [B, dim] each (the paper's
        Eq. 18), from one pass; zero where a session has no hot (cold) item. Needed by the
        contrastive distillation of `ecbench.bench.training.distill`; backbones without it
        cannot take part."""
        raise NotImplementedError(f"backbone {type(self).__name__} has no hot/cold sub-session "
                                  "readouts, which contrastive distillation needs")

    def score(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores of every item (padding column included) for each session: [B, num_items]."""
        return self.score_session(self.encode(item_seq, lengths), item_seq)

    def score_session(self, session: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
        """Scores [B, num_items] of session vectors [B, dim] encoded from `item_seq` [B, L]."""
        scores = self.compressor.score(session)
        return scores if self.repeat is None else self.repeat(scores, item_seq, session)

    def non_item_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder itself (everything but the item table)."""
        table = {id(p) for p in self.compressor.parameters()}
        return [p for p in self.parameters() if id(p) not in table]
