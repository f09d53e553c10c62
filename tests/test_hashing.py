"""`hash` and `qr`: rows computed from the id as the methods define them (checked against
plain Python), exact fast scoring, honest bytes and byte budgets."""

from __future__ import annotations

import pytest
import torch

from ecbench import compressors
from ecbench.compressors.hashing import (HASH_PRIME, HashConfig, HashedTable, QRConfig,
                                         QuotientRemainderTable, hash_budget, qr_budget)


@pytest.mark.parametrize("hashes", [1, 2])
def test_hashed_rows_are_the_sum_of_the_universal_hash_buckets(hashes):
    torch.manual_seed(0)
    table = HashedTable(101, 8, HashConfig(buckets=7, hashes=hashes, hash_seed=3))
    (a, b), *rest = table.params.tolist()
    pairs = [(a, b), *rest]
    ids = torch.tensor([[0, 1, 2], [50, 99, 100]])
    expected = torch.zeros(2, 3, 8)
    for i, row in enumerate(ids.tolist()):
        for j, item in enumerate(row):
            if item == 0:
                continue  # padding is the zero row
            for pa, pb in pairs:
                expected[i, j] += table.table[((pa * item + pb) % HASH_PRIME) % 7]
    assert torch.allclose(table(ids), expected)
    assert torch.equal(table.weight()[1:], table(torch.arange(1, 101)))


@pytest.mark.parametrize("hashes", [1, 2])
def test_hashed_scoring_by_bucket_equals_the_dense_product(hashes):
    torch.manual_seed(1)
    table = HashedTable(301, 16, HashConfig(buckets=20, hashes=hashes))
    query = torch.randn(5, 16)
    dense = query @ table.weight().t()
    assert torch.allclose(table.score(query), dense, atol=1e-6)
    assert torch.all(table.score(query)[:, 0] == 0)


def test_hash_stores_its_table_and_parameters_and_meets_a_budget():
    table = HashedTable(1001, 16, HashConfig(buckets=50, hashes=2))
    storage = table.storage()
    assert storage.total_bytes == 50 * 16 * 4 + 2 * 2 * 8
    solved = hash_budget(HashConfig(hashes=2), 1001, 16, 10.0)
    built = HashedTable(1001, 16, solved).storage()
    assert built.byte_ratio >= 10.0 and solved.buckets == 99  # the largest that meets it
    with pytest.raises(ValueError, match="fewer than the 1000 items"):
        HashedTable(1001, 16, HashConfig(buckets=1000))
    with pytest.raises(ValueError, match="--hashes must be 1 or 2"):
        HashConfig(hashes=3)


@pytest.mark.parametrize("combine", ["mult", "add"])
def test_qr_rows_combine_the_quotient_and_remainder_rows(combine):
    torch.manual_seed(2)
    table = QuotientRemainderTable(103, 4, QRConfig(remainders=10, combine=combine))
    assert table.quotients == 11 and table.m == 10
    weight = table.weight()
    assert torch.all(weight[0] == 0)
    for item in range(1, 103):
        q, r = table.quotient[item // 10], table.remainder[item % 10]
        assert torch.allclose(weight[item], q * r if combine == "mult" else q + r)


def test_qr_gives_every_item_its_own_pair_of_rows_and_meets_a_budget():
    table = QuotientRemainderTable(10_001, 16, QRConfig())
    pairs = {(i // table.m, i % table.m) for i in range(1, 10_001)}
    assert len(pairs) == 10_000 and table.m == 101
    assert table.storage().total_bytes == (table.quotients + table.m) * 16 * 4
    solved = qr_budget(QRConfig(), 10_001, 16, 20.0)
    ratio = QuotientRemainderTable(10_001, 16, solved).storage().byte_ratio
    smaller = QuotientRemainderTable(10_001, 16, QRConfig(remainders=solved.remainders - 1))
    assert ratio >= 20.0 and smaller.storage().byte_ratio < 20.0  # the largest that meets it
    with pytest.raises(ValueError, match="out of reach for qr"):
        qr_budget(QRConfig(), 10_001, 16, 100.0)


def test_both_are_registered_compressors_with_a_budget():
    for name in ("hash", "qr"):
        entry = compressors.registry.get(name)
        assert entry.budget is not None
        table = compressors.build(name, num_items=501, dim=8)
        assert table.storage().byte_ratio > 1
