"""Repeat-aware scoring: the items the session already holds, scored apart.

On the paper's datasets a large share of next clicks go back to an item of the session itself
(45% of Tmall's test cases, 38% of RetailRocket's), and ranking the session's own items by
recency alone (`ecbench.bench.evaluation.metrics.recency_ranks`) beats every model of the
paper's Table 3 on Tmall.
A dot product with one session vector ranks those items poorly. Two heads fix that on top of
any backbone and any compressor, storing no item table (a phone pays max_len + dim + 2 floats):

- `RepeatBonus` (`--repeat-bonus`) adds to each item's score, for every position it holds in
  the session, a bonus learned per recency (last item, the one before, ...) plus a gate read
  from the session vector. One softmax over everything, as before.
- `RepeatExploreMixture` (`--repeat-mixture`) is RepeatNet's mixture (Ren et al., AAAI 2019):
  p(v) = P(repeat | s) p_repeat(v) for the session's items and P(explore | s) p_explore(v) for
  the rest, p_explore a softmax of the compressor's scores over the items outside the session.
  The explore scores then learn from new clicks only, and the repeat distribution from repeat
  clicks only, where one softmax makes each kind of click push the other's scores down.
  Its scores are these log-probabilities, so the full-softmax loss of training is exactly
  -log p(label).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# A finite stand-in for log(0): -inf would turn 0 * inf into NaN in the backward pass.
NEG = -1e9
TINY = 1e-30


def recency_index(item_seq: torch.Tensor, recencies: int) -> torch.Tensor:
    """[B, L]: 0 at the session's last item, 1 at the one before, ... (capped at
    `recencies - 1`; 0 at padding, which callers mask). Sessions are left-aligned."""
    lengths = (item_seq > 0).sum(dim=1, keepdim=True)
    positions = torch.arange(item_seq.shape[1], device=item_seq.device)
    return (lengths - 1 - positions).clamp(min=0, max=recencies - 1)


def zero_gate(dim: int) -> nn.Linear:
    gate = nn.Linear(dim, 1)
    nn.init.zeros_(gate.weight)
    nn.init.zeros_(gate.bias)
    return gate


class RepeatBonus(nn.Module):
    """scores[b, v] += sum over positions t of session b holding item v of (r[recency_t] + g(s_b)).

    Recency 0 is the session's last item; positions further back than `recencies - 1` share
    the last bonus. Zero-initialised, so a model starts exactly as it would without it.
    """

    def __init__(self, recencies: int, dim: int) -> None:
        super().__init__()
        if recencies < 1:
            raise ValueError(f"the repeat bonus needs at least one recency, got {recencies}")
        self.recency = nn.Parameter(torch.zeros(recencies))
        self.gate = zero_gate(dim)

    def bonus(self, item_seq: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
        """The bonus each position of the padded sessions [B, L] adds: [B, L], zero at padding."""
        recency = recency_index(item_seq, self.recency.numel())
        return (self.recency[recency] + self.gate(session)) * (item_seq > 0)

    def forward(self, scores: torch.Tensor, item_seq: torch.Tensor,
                session: torch.Tensor) -> torch.Tensor:
        """`scores` [B, num_items] with the bonus added at the session's items (a new tensor)."""
        bonus = self.bonus(item_seq, session).to(scores.dtype)
        return scores.scatter_add(1, item_seq, bonus)


class RepeatExploreMixture(nn.Module):
    """log p(v): log P(repeat|s) + log p_repeat(v) on the session's items, log P(explore|s) +
    log p_explore(v) elsewhere, and a floor (never recommended) at the padding column.

    P(repeat|s) = sigmoid(g(s)); p_repeat puts on each item the softmax mass, over the
    session's positions, of r[recency_t] + c * score(x_t) (recency, and how well the item fits
    the session now); p_explore is the softmax of the scores over the other real items.
    Zero-initialised: at the start a session repeats or explores with even odds, and repeats
    each of its positions alike.
    """

    def __init__(self, recencies: int, dim: int) -> None:
        super().__init__()
        if recencies < 1:
            raise ValueError(f"the repeat mixture needs at least one recency, got {recencies}")
        self.recency = nn.Parameter(torch.zeros(recencies))
        self.content = nn.Parameter(torch.zeros(()))
        self.gate = zero_gate(dim)

    def forward(self, scores: torch.Tensor, item_seq: torch.Tensor,
                session: torch.Tensor) -> torch.Tensor:
        # Dense [B, num_items] work is two scatters and one log-softmax; the per-item repeat
        # mass is summed over the session's positions in [B, L, L], L being small.
        scores = scores.float()
        item_seq = F.pad(item_seq, (0, 1))  # one padding position at least: it floors column 0
        real = item_seq > 0
        recency = recency_index(item_seq, self.recency.numel())
        position_logits = self.recency[recency] + self.content * scores.gather(1, item_seq)
        position_p = torch.softmax(position_logits.masked_fill(~real, NEG), dim=1) * real
        same_item = item_seq[:, :, None] == item_seq[:, None, :]
        # a product summed, not a batched matrix product squeezed: XNNPACK reshapes a tensor
        # of one dynamic dimension at most, and [B, L, 1] has two
        item_p = (same_item.to(position_p.dtype) * position_p[:, None, :]).sum(2)
        gate = self.gate(session).float()
        floor = torch.full_like(position_p, NEG)
        # the session's items and the padding column (where padding positions point) leave the
        # explore softmax, then take their repeat log-probability (the padding column: the floor)
        explore = scores.scatter(1, item_seq, floor).log_softmax(dim=1)
        # each item written once, from its last position (a scatter's backward would hand every
        # duplicate the gradient of the one value written); the others write the floor at 0
        later = torch.ones(same_item.shape[1:], dtype=torch.bool,
                           device=item_seq.device).triu(diagonal=1)
        writes = real & ~(same_item & later).any(dim=2)
        repeat = torch.where(writes, F.logsigmoid(gate) + torch.log(item_p + TINY), floor)
        if torch.is_grad_enabled():  # autograd keeps each step's own tensor
            return (F.logsigmoid(-gate) + explore).scatter(1, item_seq * writes, repeat)
        # inference: the same values written in place into `explore`, two [B, num_items] passes
        # fewer; the exp over the catalogue that normalises the explore side remains
        return explore.add_(F.logsigmoid(-gate)).scatter_(1, item_seq * writes, repeat)


HEADS = {"bonus": RepeatBonus, "mixture": RepeatExploreMixture}
