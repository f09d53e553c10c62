"""The tensor-train tables: tt (TT-Rec style) and sttd (OD-Rec's semi-tensor-product TT, Eq. 4-8)."""

from __future__ import annotations

import math

import pytest
import torch

from ecbench import compressors
from ecbench.compressors.factorize import balanced_factors, covering_factors
from ecbench.compressors.sttd import STTDConfig, STTDTable, eq8_ratio, semi_tensor_product
from ecbench.compressors.tt import TTConfig, TTTable

TABLES = [
    ("tt", TTConfig(rank=4, cores=3)),
    ("tt", TTConfig(rank=4, cores=2)),
    ("sttd", STTDConfig(rank=8, stp=2, cores=3)),
    ("sttd", STTDConfig(rank=8, stp=4, cores=2)),
]


@pytest.fixture(params=TABLES, ids=lambda p: f"{p[0]}-{p[1].cores}cores")
def table(request):
    torch.manual_seed(0)
    name, config = request.param
    return compressors.build(name, config, num_items=1001, dim=16)


def test_weight_has_the_table_shape_and_a_zero_padding_row(table):
    weight = table.weight()
    assert weight.shape == (1001, 16)
    assert torch.count_nonzero(weight[0]) == 0
    assert torch.count_nonzero(weight[1:]) > 0


def test_lookups_equal_rows_of_the_reconstructed_table(table):
    ids = torch.tensor([[0, 1, 500], [1000, 7, 0]])
    torch.testing.assert_close(table(ids), table.weight()[ids])


def test_initial_entries_have_the_papers_spread(table):
    # U(-0.1, 0.1) has std 0.0577; the cores are scaled to give the product that spread
    assert 0.02 < table.weight()[1:].std().item() < 0.15


def test_gradients_reach_every_core(table):
    scores = table.score(torch.randn(3, 16))
    (scores ** 2).sum().backward()
    for p in table.parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0


def test_storage_lists_the_cores_in_float32(table):
    report = table.storage()
    assert report.total_bytes == 4 * sum(p.numel() for p in table.parameters())
    assert all(t.dtype == "float32" for t in report.tensors)
    assert report.byte_ratio == pytest.approx(1001 * 16 * 4 / report.total_bytes)


def test_semi_tensor_product_is_a_times_b_kron_identity():
    a, b = torch.randn(5, 12), torch.randn(3, 7)
    torch.testing.assert_close(semi_tensor_product(a, b, 4), a @ torch.kron(b, torch.eye(4)))


def test_two_core_stp_table_is_the_stp_of_its_cores():
    torch.manual_seed(1)
    t = STTDTable(64, 16, STTDConfig(rank=8, stp=2, cores=2, item_factors="8x8",
                                     dim_factors="4x4"))
    g1, g2 = t.stp_cores
    x = g1 @ torch.kron(g2, torch.eye(2))  # [I1 J1, I2 J2]
    expected = x.reshape(8, 4, 8, 4).permute(0, 2, 1, 3).reshape(64, 16)
    expected[0] = 0
    torch.testing.assert_close(t.weight(), expected)


def test_three_core_stp_table_is_an_explicit_sum_over_its_ranks():
    """X[(m1, m2), m3] with m2 = c2 n + t2, m3 = c3 n + t3 is, by Eq. 4-7 (A x B = A (B kron
    I_n), each core's rank split as j n + t): sum_{i, j} G1[m1, i n + t2] G2[i, c2, j n + t3]
    G3[j, c3], written out as one einsum, apart from the code's chain of products."""
    torch.manual_seed(3)
    n, r = 2, 8
    t = STTDTable(512, 8, STTDConfig(rank=r, stp=n, cores=3, item_factors="8x8x8",
                                     dim_factors="2x2x2"))
    g1, g2, g3 = (core.detach() for core in t.stp_cores)
    m1, m2, m3 = g1.shape[0], g2.shape[1] * n, g3.shape[1] * n
    x = torch.einsum("aiu,icjv,jd->acudv", g1.view(m1, r // n, n),
                     g2.view(r // n, m2 // n, r // n, n), g3)
    expected = x.reshape(m1 * m2, m3)  # rows (m1, c2, t2), columns (c3, t3)
    torch.testing.assert_close(t.full_tensor().detach(), expected)


def test_sttd_storage_matches_eq8():
    t = STTDTable(40728, 128, STTDConfig(rank=128, stp=4, cores=3))
    items, dims = t.item_factors, t.dim_factors
    m = [i * j for i, j in zip(items, dims)]
    stored = m[0] * 128 + m[1] * 128 ** 2 / 16 + m[2] * 128 / 16
    # Eq. 8's rate, its numerator the real table (40,728 rows), not the padded factor product
    assert math.prod(items) > 40728
    assert t.storage().paper_ratio == pytest.approx(40728 * 128 / stored)
    assert eq8_ratio(items, dims, 128, 4) == pytest.approx(math.prod(m) / stored)
    assert t.storage().total_bytes == 4 * stored
    assert t.storage().paper_ratio == pytest.approx(t.storage().byte_ratio)  # floats both


def test_tt_svd_initialisation_reconstructs_a_low_rank_table():
    torch.manual_seed(2)
    source = TTTable(1024, 16, TTConfig(rank=3, cores=2, item_factors="32x32", dim_factors="4x4"))
    with torch.no_grad():
        table = source.weight().clone()
        table[0] = 0  # a trained table's padding row
    target = TTTable(1024, 16, TTConfig(rank=6, cores=2, item_factors="32x32", dim_factors="4x4"))
    target.init_from_table(table)
    error = (target.weight() - table).norm() / table.norm()
    assert error < 1e-4  # rank 3 plus the zeroed row fits in rank 6


@pytest.mark.parametrize("config, message", [
    (lambda: STTDConfig(rank=10, stp=4), "must divide --rank"),
    (lambda: TTConfig(rank=0), "--rank must be at least 1"),
    (lambda: TTConfig(cores=4), "--cores must be 2 or 3"),
    (lambda: TTConfig(item_factors="10xa"), "--item-factors must look like"),
])
def test_impossible_options_are_rejected(config, message):
    with pytest.raises(ValueError, match=message):
        config()


def test_stp_factor_must_divide_the_core_modes():
    with pytest.raises(ValueError, match="must divide I_2"):
        STTDTable(100, 15, STTDConfig(rank=8, stp=4, cores=2, item_factors="10x10",
                                      dim_factors="3x5"))


def test_factorisations():
    assert balanced_factors(128, 3) == [4, 4, 8]
    assert math.prod(balanced_factors(256, 2)) == 256
    cover = covering_factors(40728, 3)
    assert math.prod(cover) >= 40728 and max(cover) - min(cover) <= 1


@pytest.mark.parametrize("name, config", [("tt", TTConfig(rank=4, cores=2, item_factors="8x8",
                                                          dim_factors="4x4")),
                                          ("sttd", STTDConfig(rank=8, stp=2, cores=3))])
def test_the_deployed_table_is_rebuilt_from_its_cores_on_every_call(name, config):
    """What a phone runs holds the cores, never the dense table: a change to a core shows in
    the very next call's scores, and no stored tensor has the table's shape."""
    table = compressors.build(name, config, num_items=64, dim=16)
    table.deploy()
    form = table.inference_form().eval()
    stored = [tuple(v.shape) for v in form.state_dict().values()]
    assert (64, 16) not in stored
    query = torch.randn(3, 16)
    with torch.no_grad(), form.call():
        before = form.score(query)
    with torch.no_grad():
        next(form.parameters()).mul_(2.0)
    with torch.no_grad(), form.call():
        after = form.score(query)
    assert not torch.allclose(before, after)
