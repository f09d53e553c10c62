"""The exact chunked top-K against torch.topk, in both memory layouts."""

from __future__ import annotations

import pytest
import torch

from ecbench.bench.evaluation.topk import top_k


@pytest.mark.parametrize("batch, n, k", [(1, 40727, 20), (7, 1000, 10), (3, 130, 20), (5, 64, 3)])
@pytest.mark.parametrize("layout", ["rows", "transposed"])
def test_chunked_top_k_equals_topk(batch, n, k, layout):
    g = torch.Generator().manual_seed(n)
    scores = torch.randn(batch, n, generator=g)
    scores[:, ::97] += 3.0  # several strong items in a few chunks
    if layout == "transposed":
        scores = scores.t().contiguous().t()
    values, ids = top_k(scores, k)
    expected = scores.topk(k, dim=1)
    torch.testing.assert_close(values, expected.values, rtol=0, atol=0)
    torch.testing.assert_close(scores.gather(1, ids), values, rtol=0, atol=0)
    assert torch.equal(ids, expected.indices)  # no ties in continuous random scores


def test_ties_keep_exact_values():
    scores = torch.zeros(2, 500)
    scores[:, 100:130] = 1.0  # 30 tied maxima spread over one chunk boundary
    values, ids = top_k(scores, 20)
    assert torch.equal(values, torch.ones(2, 20))
    assert bool(((ids >= 100) & (ids < 130)).all())


@pytest.mark.parametrize("layout", ["rows", "transposed"])
def test_leading_columns_are_skipped_in_either_layout(layout):
    scores = torch.randn(4, 40728)
    scores[:, 0] = 100.0  # the padding column would win if it were not skipped
    if layout == "transposed":
        scores = scores.t().contiguous().t()  # lookup-table scoring returns this layout
    values, ids = top_k(scores, 20, first=1)
    expected = scores[:, 1:].topk(20)
    assert torch.equal(ids, expected.indices + 1)
    assert torch.equal(values, expected.values)
    assert torch.equal(top_k(scores[:, 1:], 20)[1], expected.indices)  # a sliced view works too
