"""Sums and scores through compositional codes, never through the [num_items, dim] table.

An item's vector is the sum of one codeword from each of M codebooks (the paper's Eq. 10), so a
session's score for every item is a sum of M lookups into per-session tables of codeword scores.
Training sums codewords with a cheaper backward than `embedding_bag`'s; the deployed form
(`CodeLookupForm`) holds only the integer codes and the codebooks.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ecbench.compressors.base import InferenceForm, widened


def lookup_table_scores(query: torch.Tensor, flat_codebooks: torch.Tensor,
                        by_item: torch.Tensor, by_codebook: torch.Tensor) -> torch.Tensor:
    """Exact scores [B, N] of every item from per-session lookup tables.

    LUT[b, i, k] = q_b . E_i(k) and score[b, v] = sum_i LUT[b, i, C_v^i]: M small gathers per
    item instead of a dim-long dot product. `by_item` [N, M] and `by_codebook` [M, N] are the
    codes offset into `flat_codebooks` [M K, dim]. Where no gradient is needed this is
    `code_lookup_scores`; training sums through `codeword_sum`, whose backward is cheaper than
    `embedding_bag`'s own.
    """
    lut_t = flat_codebooks @ query.t()  # [M K, B]
    if not (torch.is_grad_enabled() and lut_t.requires_grad):
        return code_lookup_scores(lut_t, by_codebook, by_item)
    by_item_scores = codeword_sum(lut_t, by_item, by_codebook)
    by_item_scores[:1].zero_()
    return by_item_scores.t()


def code_lookup_scores(lut_t: torch.Tensor, by_codebook: torch.Tensor,
                       by_item: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scores [B, N] from the transposed lookup tables `lut_t` [M K, B] and the codes offset
    into them, [M, N] (`by_item`, the same [N, M], is derived when not given).

    One session: M one-dimensional `index_select`s, the fastest gather on CPU. Several:
    `embedding_bag` sums, for every item, M rows of `lut_t`, and the result is returned as a
    transposed view [B, N] (a copy would cost more than the scoring;
    `ecbench.bench.evaluation.topk` reads it as it is). Row 0, the padding item, scores 0.
    """
    if lut_t.shape[1] == 1:
        lut = lut_t.reshape(-1)
        scores = lut.index_select(0, by_codebook[0])
        for i in range(1, by_codebook.shape[0]):
            scores.add_(lut.index_select(0, by_codebook[i]))
        scores[:1].zero_()
        return scores.unsqueeze(0)
    if by_item is None:
        by_item = by_codebook.t().contiguous()
    by_item_scores = F.embedding_bag(by_item, lut_t, mode="sum")
    by_item_scores[:1].zero_()
    return by_item_scores.t()


def codeword_rows(ids: torch.Tensor, index: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """The vectors of items `ids` from their codes offset into `flat` (`index`, ids.shape +
    (M,)): the sum of their codewords, zero for the padding id 0."""
    rows = F.embedding(index, flat).sum(-2)
    return rows * (ids > 0).unsqueeze(-1).to(rows.dtype)


class _CodewordSum(torch.autograd.Function):
    """An `embedding_bag` sum whose backward is M `index_add_`s: embedding_bag's own backward
    sorts the indices and is several times slower on CPU."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, by_item: torch.Tensor, by_codebook: torch.Tensor
                ) -> torch.Tensor:
        ctx.save_for_backward(by_codebook)
        ctx.rows = flat.shape[0]
        return F.embedding_bag(by_item, flat, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (by_codebook,) = ctx.saved_tensors
        return scatter_to_codewords(grad, by_codebook, ctx.rows), None, None


def scatter_to_codewords(grad: torch.Tensor, by_codebook: torch.Tensor, rows: int
                          ) -> torch.Tensor:
    """The gradient of a codeword sum for the flat codewords [rows, columns]: item v's
    gradient added to each of its codewords, one `index_add_` per codebook (M is a handful)."""
    grad = grad.contiguous()
    grad_flat = grad.new_zeros(rows, grad.shape[1])
    for index in by_codebook:
        grad_flat.index_add_(0, index, grad)
    return grad_flat


def codeword_sum(flat: torch.Tensor, by_item: torch.Tensor, by_codebook: torch.Tensor
                 ) -> torch.Tensor:
    """out[v] = sum_i flat[by_item[v, i]], [N, columns]: codes [N, M] offset into `flat`, and
    the same [M, N] (for the backward)."""
    return _CodewordSum.apply(flat, by_item, by_codebook)


@functools.cache
def _scripted_code_lookup_scores() -> Any:
    """`code_lookup_scores` scripted, so that a traced TorchScript export keeps its branch on
    the batch size (a trace alone would bake in the branch of the example batch). Scripted on
    first use: `torch.jit.script` is for the TorchScript export only."""
    return torch.jit.script(code_lookup_scores)


class CodeLookupForm(InferenceForm):
    """A deployed ccode table: e_v = sum_i E_i(C_v^i) (Eq. 10) and lookup-table scoring.

    Holds the codes as stored on the device (uint8 for K <= 256), codebook-major [M, N] so that
    scoring reads each codebook's codes in one run, and the codebooks; never the
    [num_items, dim] table. Scoring: LUT[b, i, k] = q_b . E_i(k), score[b, v] =
    sum_i LUT[b, i, C_v^i]. Indexing needs wider integers than uint8: the eager form widens the
    codes once, when it is built (as a phone app would at load), the `exportable` form on every
    call, so that the artefact holds only uint8. Eager and TorchScript score with
    `code_lookup_scores` (`embedding_bag`, or 1-D gathers for one session). ONNX and ExecuTorch
    have no `embedding_bag`: the ONNX graph gathers every item's M entries in one element-wise
    gather and sums them; the ExecuTorch one (`gather_elements` off) sums M per-codebook
    gathers of int32 codes.
    """

    def __init__(self, codes: torch.Tensor, codebooks: torch.Tensor, exportable: bool) -> None:
        super().__init__(None)
        self.M, self.K, self.dim = codebooks.shape
        self.num_items = codes.shape[0]
        self.exportable = exportable
        self.register_buffer("codes", codes.t().contiguous())  # [M, N], as stored
        self.codebooks = nn.Parameter(codebooks, requires_grad=False)
        self.register_buffer("offsets", torch.arange(self.M).unsqueeze(1) * self.K)  # [M, 1]
        if not exportable:  # widened at load, not saved
            by_codebook = widened(self.codes) + self.offsets
            self.register_buffer("by_codebook", by_codebook, persistent=False)
            self.register_buffer("by_item", by_codebook.t().contiguous(), persistent=False)

    def _flat(self) -> torch.Tensor:
        """The codewords, one a row: [M * K, codeword width]."""
        return self.codebooks.reshape(self.M * self.K, -1)

    def codewords(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Each codebook's codeword of every id, ids.shape + (width,) apiece: M gathers (one
        [..., M, width] gather of ids of a data-dependent count, such as a session's real
        items, gives ExecuTorch strides it cannot order)."""
        flat = self._flat()
        return [F.embedding(widened(self.codes[i][ids]) + i * self.K, flat)
                for i in range(self.M)]

    def join(self, codewords: list[torch.Tensor]) -> torch.Tensor:
        """An item's vector from its codewords: their sum (Eq. 10; a subclass may join them
        otherwise: pq's sub-vectors side by side)."""
        return sum(codewords[1:], codewords[0])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.join(self.codewords(ids))
        return rows * (ids > 0).unsqueeze(-1).to(rows.dtype)

    def lookup_tables(self, query: torch.Tensor) -> torch.Tensor:
        """LUT[i * K + k, b] = q_b . E_i(k), [M * K, B] (a subclass may read a codeword
        against part of the query: pq's sub-spaces)."""
        return self._flat() @ query.t()

    def score(self, query: torch.Tensor) -> torch.Tensor:
        luts = self.lookup_tables(query)
        if not self.exportable:
            return code_lookup_scores(luts, self.by_codebook, self.by_item)
        if torch.jit.is_tracing():  # TorchScript: the eager scorer, widened on every call
            return _scripted_code_lookup_scores()(luts, widened(self.codes) + self.offsets, None)
        luts = luts.view(self.M, self.K, -1)  # [M, K, B]
        if self.gather_elements:  # ONNX: one gather of every item's M entries
            codes = widened(self.codes)  # widened on every call
            index = codes.unsqueeze(0).expand(luts.shape[2], -1, -1)  # [B, M, N]
            scores = torch.gather(luts.permute(2, 0, 1), 2, index).sum(1)  # [B, N]
            return torch.cat([scores.new_zeros(scores.shape[0], 1), scores[:, 1:]], 1)
        codes = widened(self.codes, torch.int32)  # widened on every call
        by_item_scores = F.embedding(codes[0], luts[0])
        for i in range(1, self.M):
            by_item_scores = by_item_scores + F.embedding(codes[i], luts[i])
        by_item_scores[0] = 0.0  # the padding row is the zero vector
        return by_item_scores.t()  # a view [B, N]; ecbench.bench.evaluation.topk reads it without a copy
