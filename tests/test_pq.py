"""`pq`: codes by k-means per sub-space (checked against a numpy nearest-centroid loop), rows
that concatenate the codewords, exact lookup-table scoring, honest bytes and the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecbench import compressors
from ecbench.compressors.pq import PQConfig, ProductQuantizedTable, kmeans_pp, pq_budget


def clustered_table(num_items: int, dim: int, clusters: int = 12, seed: int = 0) -> torch.Tensor:
    """A teacher-like table: items around a few centres, row 0 the padding zero."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    table = centres[torch.randint(clusters, (num_items,), generator=g)]
    table = table + 0.3 * torch.randn(num_items, dim, generator=g)
    table[0] = 0
    return table


def numpy_nearest(sub_rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """For each row, the index of the nearest centroid: plain loops, float64."""
    out = np.zeros(len(sub_rows), dtype=np.int64)
    for i, row in enumerate(sub_rows):
        best, best_k = math.inf, -1
        for k, c in enumerate(centroids):
            d = sum((float(a) - float(b)) ** 2 for a, b in zip(row, c))
            if d < best:
                best, best_k = d, k
        out[i] = best_k
    return out


def test_codes_are_the_nearest_centroids_and_rows_concatenate_their_codewords():
    n, dim, groups, K = 301, 12, 3, 8
    table = clustered_table(n, dim)
    pq = ProductQuantizedTable(n, dim, PQConfig(groups=groups, K=K))
    pq.init_from_table(table)
    centroids = pq.codebooks.detach().numpy().astype(np.float64)  # the k-means centroids
    sub = table.numpy().astype(np.float64).reshape(n, groups, dim // groups)
    expected_codes = np.stack([numpy_nearest(sub[1:, g], centroids[g]) for g in range(groups)], 1)
    assert np.array_equal(pq.codes[1:].long().numpy(), expected_codes)
    assert pq.codes.dtype == torch.uint8 and pq.codes[0].tolist() == [0] * groups

    weight = pq.weight().detach().numpy()
    assert np.all(weight[0] == 0)
    for i in range(1, n):
        row = np.concatenate([centroids[g, expected_codes[i - 1, g]] for g in range(groups)])
        np.testing.assert_allclose(weight[i], row, rtol=0, atol=1e-6)
    ids = torch.tensor([[0, 5, 300], [17, 0, 1]])
    assert torch.equal(pq(ids), pq.weight()[ids])


def test_kmeans_codes_quantise_better_than_random_codes_and_are_deterministic():
    n, dim, groups, K = 801, 16, 4, 16
    table = clustered_table(n, dim, clusters=40, seed=1)
    pq = ProductQuantizedTable(n, dim, PQConfig(groups=groups, K=K))
    pq.init_from_table(table)
    kmeans_error = float((pq.weight().detach() - table)[1:].square().sum())

    # random codes with their best codebooks (each codeword the mean of its items), by loops
    rng = np.random.default_rng(0)
    sub = table.numpy().reshape(n, groups, dim // groups)[1:]
    random_error = 0.0
    for g in range(groups):
        codes = rng.integers(0, K, size=n - 1)
        for k in range(K):
            members = sub[codes == k, g]
            if len(members):
                random_error += float(((members - members.mean(0)) ** 2).sum())
    assert kmeans_error < 0.5 * random_error

    again = ProductQuantizedTable(n, dim, PQConfig(groups=groups, K=K))
    again.init_from_table(table)
    assert torch.equal(again.codes, pq.codes) and torch.equal(again.codebooks, pq.codebooks)


def test_kmeans_copes_with_fewer_distinct_rows_than_centroids():
    rows = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [-3.0, 2.0]])
    x = rows[torch.arange(20) % 5]
    centroids, labels = kmeans_pp(x, 8, iterations=5, seed=0)
    assert centroids.shape == (8, 2) and labels.min() >= 0 and labels.max() < 8
    assert torch.allclose(centroids[labels], x)  # every distinct row has its own centroid


def test_codes_before_the_teacher_are_valid_balanced_random_codes():
    pq = ProductQuantizedTable(401, 8, PQConfig(groups=2, K=16))
    codes = pq.codes.long()
    assert codes[0].tolist() == [0, 0] and codes.min() >= 0 and codes.max() < 16
    for g in range(2):
        counts = np.bincount(codes[1:, g].numpy(), minlength=16)
        assert counts.max() - counts.min() <= 1  # each codeword used 400 / 16 = 25 times
    wide = ProductQuantizedTable(401, 8, PQConfig(groups=2, K=300))
    assert wide.codes.dtype == torch.uint16 and int(wide.codes.long().max()) < 300
    assert wide.storage().tensors[0].dtype == "uint16"


@pytest.mark.parametrize("batch", [1, 4])
def test_lookup_table_scores_equal_explicit_dot_products(batch):
    torch.manual_seed(0)
    n, dim = 257, 12
    pq = ProductQuantizedTable(n, dim, PQConfig(groups=4, K=16))
    pq.init_from_table(clustered_table(n, dim, seed=2))
    query = torch.randn(batch, dim)
    weight = pq.weight().detach().numpy()
    expected = np.array([[sum(float(q[j]) * float(weight[v, j]) for j in range(dim))
                          for v in range(n)] for q in query.numpy()])
    with torch.no_grad():
        np.testing.assert_allclose(pq.score(query).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(pq.score(query).detach().numpy(), expected, atol=1e-5)  # grad path
    assert torch.all(pq.score(query)[:, 0] == 0)
    for exportable in (False, True):
        form = pq.inference_form(exportable)
        with torch.no_grad():
            np.testing.assert_allclose(form.score(query).numpy(), expected, atol=1e-5)
            ids = torch.tensor([[0, 3], [256, 9]])
            assert torch.allclose(form(ids), pq.weight()[ids])
        assert {name: b.dtype for name, b in form.named_buffers()}["codes"] == torch.uint8


def test_the_lookup_table_gradient_equals_the_dense_one():
    torch.manual_seed(1)
    n, dim = 129, 8
    pq = ProductQuantizedTable(n, dim, PQConfig(groups=2, K=8))
    query, target = torch.randn(6, dim), torch.randint(1, n, (6,))
    torch.nn.functional.cross_entropy(pq.score(query), target).backward()
    fast = pq.codebooks.grad.clone()
    pq.codebooks.grad = None
    torch.nn.functional.cross_entropy(query @ pq.weight().t(), target).backward()
    assert torch.allclose(fast, pq.codebooks.grad, atol=1e-6)


def test_storage_counts_codes_and_codebooks_by_hand():
    report = ProductQuantizedTable(1001, 16, PQConfig(groups=4, K=256)).storage()
    assert report.total_bytes == 1001 * 4 * 1 + 4 * 256 * 4 * 4
    assert [t.dtype for t in report.tensors] == ["uint8", "float32"]
    assert report.paper_ratio == pytest.approx(1001 * 16 / (1001 * 4 + 4 * 256 * 4))
    assert report.packed_bytes == math.ceil(1001 * 4 * 8 / 8) + 4 * 256 * 4 * 4
    wide = ProductQuantizedTable(1001, 16, PQConfig(groups=8, K=300)).storage()
    assert wide.total_bytes == 1001 * 8 * 2 + 8 * 300 * 2 * 4  # K > 256: uint16 codes
    assert wide.packed_bytes == math.ceil(1001 * 8 * 9 / 8) + 8 * 300 * 2 * 4


def test_budget_picks_the_most_sub_spaces_that_meet_the_ratio():
    n, dim = 40_001, 64
    full = n * dim * 4

    def hand_bytes(groups: int) -> int:
        return n * groups + 256 * dim * 4

    solved = pq_budget(PQConfig(), n, dim, 20.0)
    divisors = [g for g in range(1, dim + 1) if dim % g == 0]
    meeting = [g for g in divisors if full / hand_bytes(g) >= 20.0]
    assert solved.groups == max(meeting) == 8 and solved.K == 256
    table = ProductQuantizedTable(n, dim, solved).storage()
    assert table.total_bytes == hand_bytes(8) and table.byte_ratio >= 20.0
    assert ProductQuantizedTable(n, dim, PQConfig(groups=16)).storage().byte_ratio < 20.0
    with pytest.raises(ValueError, match="out of reach for pq with K=256"):
        pq_budget(PQConfig(), n, dim, 300.0)
    with pytest.raises(ValueError, match="--K 256 exceeds the 100 real items"):
        pq_budget(PQConfig(), 101, dim, 2.0)


def test_bad_options_are_refused_clearly():
    with pytest.raises(ValueError, match="--groups must be at least 1"):
        PQConfig(groups=0)
    with pytest.raises(ValueError, match="--K must be at least 2"):
        PQConfig(K=1)
    with pytest.raises(ValueError, match="--groups 3 must divide dim=16"):
        ProductQuantizedTable(101, 16, PQConfig(groups=3, K=8))
    with pytest.raises(ValueError, match="--K 256 exceeds the 100 real items"):
        ProductQuantizedTable(101, 16, PQConfig())
    pq = ProductQuantizedTable(101, 16, PQConfig(groups=4, K=8))
    with pytest.raises(ValueError, match="teacher table is"):
        pq.init_from_table(torch.zeros(100, 16))


def test_registered_with_a_teacher_and_a_budget():
    entry = compressors.registry.get("pq")
    assert entry.budget is pq_budget and entry.flags() == ["--groups", "--K"]
    table = compressors.build("pq", num_items=501, dim=16)
    assert table.uses_teacher() and (table.groups, table.K) == (8, 256)
