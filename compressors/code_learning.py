"""How ccode learns and fixes its codes: the code encoder and straight-through Gumbel-softmax
sampling (the paper's Eq. 13-15), the k-means and random initialisations, and the repair that
makes every item's code unique (Section 4.1)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ecbench.compressors.codewords import scatter_to_codewords


class CodeEncoder(nn.Module):
    """alpha_v^i = softmax(softplus(theta'_i^T h_v + b'_i)), h_v = tanh(theta^T X_v + b)  (Eq. 15).

    Returns log alpha, [N, M, K].
    """

    def __init__(self, dim: int, M: int, K: int) -> None:
        super().__init__()
        self.M, self.K = M, K
        hidden = max(M * K // 2, 1)
        self.hidden = nn.Linear(dim, hidden)
        self.heads = nn.Linear(hidden, M * K)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """softplus(theta'^T h_v + b'): log alpha up to a per-codebook constant, [N, M, K]."""
        return F.softplus(self.heads(torch.tanh(self.hidden(x)))).view(-1, self.M, self.K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits(x), dim=-1)


def gumbel_softmax_sample(logits: torch.Tensor, tau: float, scale: float = 1.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax((logits + scale G) / tau) with G ~ Gumbel(0, 1) (Eq. 14 at scale 1), and its
    argmax (the code).

    The noise is -log(-log U) from uniforms: `F.gumbel_softmax` draws it through `exponential_`,
    about 5x slower on CPU, and training draws N x M x K of it every step. In-place steps keep
    the passes over that tensor few.
    """
    if scale == 0:
        perturbed = logits / tau
    else:
        neg_noise = torch.empty_like(logits).uniform_(torch.finfo(logits.dtype).tiny, 1.0)
        neg_noise.log_().neg_().log_()  # log(-log U) = -G
        perturbed = torch.sub(logits, neg_noise, alpha=scale).mul_(1.0 / tau)
    index = perturbed.detach().max(-1).indices
    return perturbed.softmax(-1), index


class StraightThroughCodes(torch.autograd.Function):
    """Hard straight-through composition of the table from every item's current `codes` [N, M],
    of which the items `rows` (None: all) were just sampled as the argmax of `soft` [S, M, K].

    The forward sums the chosen codewords (an embedding_bag; row 0, the padding item, is zero);
    the backward hands the one-hot codes' gradient on to `soft` (one matrix product) and the
    table's gradient to the codebooks (M scatters). With every row sampled this equals
    `einsum("nmk,mkd->nd", hard - soft.detach() + soft, codebooks)` without building the
    one-hot codes or multiplying by them.
    """

    @staticmethod
    def forward(ctx, soft: torch.Tensor, rows: torch.Tensor | None, codes: torch.Tensor,
                codebooks: torch.Tensor) -> torch.Tensor:
        M, K, _ = codebooks.shape
        by_item = codes + torch.arange(M, device=codes.device) * K
        ctx.save_for_backward(by_item, codebooks, *(() if rows is None else (rows,)))
        table = F.embedding_bag(by_item, codebooks.reshape(M * K, -1), mode="sum")
        table[0].zero_()
        return table

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        by_item, codebooks, *rows = ctx.saved_tensors
        M, K, D = codebooks.shape
        sampled = grad.index_select(0, rows[0]) if rows else grad
        grad_soft = (sampled @ codebooks.reshape(M * K, D).t()).view(-1, M, K)
        if not rows:
            grad_soft[0].zero_()
        # the padding row is zero in the forward, so its gradient reaches no codeword
        grad_flat = scatter_to_codewords(grad[1:], by_item[1:].t(), M * K)
        return grad_soft, None, None, grad_flat.view(M, K, D)


def kmeans(x: torch.Tensor, k: int, iterations: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Lloyd's k-means with k-means++-style seeding by distance; returns (centroids, labels)."""
    g = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iterations):
        labels = torch.cdist(x, centroids).argmin(1)
        empty = torch.bincount(labels, minlength=k) == 0
        centroids = torch.where(empty.unsqueeze(1), centroids, cluster_means(x, labels, k))
    return centroids, torch.cdist(x, centroids).argmin(1)


def balanced_random_codes(n: int, k: int, seed: int) -> torch.Tensor:
    """A seeded random codeword in [0, k) for each of n items, every codeword used n/k times
    (to within one)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % k)[torch.randperm(n, generator=g)]


def cluster_means(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The mean row of `x` in each of the k clusters of `labels` (zero for an empty one)."""
    sums = x.new_zeros(k, x.shape[1]).index_add_(0, labels, x)
    return sums / torch.bincount(labels, minlength=k).clamp(min=1).unsqueeze(1).to(x.dtype)


def make_codes_unique(codes: np.ndarray, log_alpha: np.ndarray, K: int) -> tuple[np.ndarray, int]:
    """Give every real item (row >= 1) a distinct code, changing as little as possible.

    Items that share a code get identical scores, and pessimistic ties punish that, so Section
    4.1's unique codes are enforced: within each group of identical codes the most confident item
    keeps it, the others move to the free code that changes one codebook and loses the least
    encoder log-probability (or, if all of those are taken, to the first free code).
    """
    codes = codes.copy()
    M = codes.shape[1]
    weights = K ** np.arange(M - 1, -1, -1, dtype=np.int64)
    keys = codes[1:] @ weights
    confidence = np.take_along_axis(log_alpha[1:], codes[1:, :, None], 2).sum((1, 2))
    order = np.lexsort((-confidence, keys))  # by code, most confident first
    duplicate = np.zeros(len(keys), dtype=bool)
    duplicate[order[1:]] = keys[order[1:]] == keys[order[:-1]]
    taken = set(keys.tolist())
    moved = np.flatnonzero(duplicate)
    for row in moved[np.argsort(-confidence[moved])]:
        item = row + 1
        code = codes[item]
        # the change in log-probability of moving codebook i to codeword k, best first
        gain = log_alpha[item] - log_alpha[item][np.arange(M), code][:, None]
        gain[np.arange(M), code] = -np.inf
        new_key = None
        for flat in np.argsort(-gain, axis=None, kind="stable")[:M * (K - 1)]:
            i, k = divmod(int(flat), K)
            key = int(keys[row] + (k - code[i]) * weights[i])
            if key not in taken:
                new_key, codes[item, i] = key, k
                break
        if new_key is None:  # every single change is taken: search the whole code space
            free = next(c for c in range(K ** M) if c not in taken)
            codes[item] = (free // weights) % K
            new_key = free
        taken.add(new_key)
        keys[row] = new_key
    return codes, len(moved)
