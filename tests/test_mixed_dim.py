"""`mixed-dim`: popularity blocks and the power-law dimensions checked against plain numpy, rows
against table_b[row] @ proj_b for ranks by numpy argsort, exact block-wise scoring, honest
bytes and the byte budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecbench import compressors
from ecbench.compressors.mixed_dim import (MixedDimConfig, MixedDimForm, MixedDimTable,
                                           mixed_dim_budget)

N, D = 1001, 16


def reference_blocks(num_items: int, blocks: int, growth: float, dim: int, alpha: float,
                     min_dim: int) -> tuple[list[int], list[int]]:
    """Block sizes proportional to growth^b over the real items, and d_b = dim (n_0/n_b)^alpha."""
    real = num_items - 1
    weights = growth ** np.arange(blocks)
    ends = np.rint(real * np.cumsum(weights) / weights.sum()).astype(int)
    sizes = np.diff(np.concatenate([[0], ends])).tolist()
    dims = [int(np.clip(np.rint(dim * (sizes[0] / n) ** alpha), min_dim, dim)) for n in sizes]
    return sizes, dims


def counted_table(seed: int = 0, **options) -> tuple[MixedDimTable, np.ndarray]:
    torch.manual_seed(seed)
    table = MixedDimTable(N, D, MixedDimConfig(**options))
    counts = np.random.default_rng(seed).integers(0, 30, size=N)  # many ties
    counts[0] = 0
    table.init_from_counts(torch.from_numpy(counts))
    return table, counts


def reference_table(table: MixedDimTable, counts: np.ndarray) -> np.ndarray:
    """Every item's row, by hand: rank by count (numpy argsort, ties by id), its block, its row
    in the block, table_b[row] @ proj_b."""
    order = np.argsort(-counts[1:], kind="stable") + 1  # item ids, most frequent first
    sizes = [t.shape[0] for t in table.tables]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = np.zeros((N, D), dtype=np.float32)
    for position, item in enumerate(order):
        b = int(np.searchsorted(starts, position, side="right") - 1)
        row = table.tables[b].detach().numpy()[position - starts[b]]
        if row.shape[0] < D:
            p = table.projection_of[b]
            row = row @ table.projections[p].detach().numpy()
        out[item] = row
    return out


def test_blocks_and_dimensions_follow_the_power_law():
    table = MixedDimTable(N, D, MixedDimConfig())
    sizes, dims = reference_blocks(N, 4, 4.0, D, 0.5, 1)
    assert [t.shape[0] for t in table.tables] == sizes == [12, 47, 188, 753]
    assert table.dims == dims == [16, 8, 4, 2]  # ~ dim / 2^b at alpha 0.5, growth 4
    assert [tuple(t.shape) for t in table.tables] == list(zip(sizes, dims))
    assert [tuple(p.shape) for p in table.projections] == [(8, D), (4, D), (2, D)]
    wide = MixedDimTable(N, D, MixedDimConfig(blocks=3, block_growth=2.0, alpha=0.2, min_dim=6))
    assert wide.dims == reference_blocks(N, 3, 2.0, D, 0.2, 6)[1]
    assert MixedDimTable(N, D, MixedDimConfig(alpha=0.0)).dims == [D] * 4  # uniform at alpha 0
    assert len(MixedDimTable(N, D, MixedDimConfig(alpha=0.0)).projections) == 0


@pytest.mark.parametrize("options", [{}, {"blocks": 3, "block_growth": 2.5, "alpha": 0.3}])
def test_rows_are_the_block_rows_projected_in_popularity_order(options):
    table, counts = counted_table(**options)
    expected = torch.from_numpy(reference_table(table, counts))
    ids = torch.tensor([[0, 1, 7], [N - 1, 500, 0]])
    with torch.no_grad():
        torch.testing.assert_close(table.weight(), expected)
        torch.testing.assert_close(table(ids), expected[ids])
        query = torch.randn(5, D)
        torch.testing.assert_close(table.score(query), query @ expected.t(), atol=1e-5, rtol=1e-5)
    hottest = int(np.argmax(counts))  # the first of the most frequent: row 0 of the top block
    torch.testing.assert_close(table(torch.tensor(hottest)), table.tables[0][0].detach())


def test_before_counts_the_ranking_is_by_id():
    table = MixedDimTable(N, D, MixedDimConfig())
    assert torch.equal(table.rank, torch.arange(N))
    with torch.no_grad():
        torch.testing.assert_close(table(torch.tensor([1, 12, 13])),
                                   torch.stack([table.tables[0][0], table.tables[0][11],
                                                table.tables[1][0] @ table.projections[0]]))
    with pytest.raises(ValueError, match="item counts are"):
        table.init_from_counts(torch.zeros(N - 1, dtype=torch.long))


def test_training_reaches_every_block_and_the_ranking_is_saved():
    table, _ = counted_table(seed=4)
    with table.shared_weight():
        loss = table.score(torch.randn(3, D)).logsumexp(1).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in table.parameters())
    fresh = MixedDimTable(N, D, MixedDimConfig())
    fresh.load_state_dict(table.state_dict())
    assert torch.equal(fresh.rank, table.rank)
    torch.testing.assert_close(fresh.weight(), table.weight())


@pytest.mark.parametrize("exportable", [False, True])
def test_the_inference_form_gives_the_same_rows_and_scores(exportable):
    table, counts = counted_table(seed=5)
    expected = torch.from_numpy(reference_table(table, counts))
    table.deploy()
    form = table.inference_form(exportable)
    assert isinstance(form, MixedDimForm) and form.rank.element_size() == 2  # uint16 bits
    ids = torch.tensor([[3, 0], [N - 1, 999]])
    query = torch.randn(4, D)
    with torch.no_grad(), form.call():
        torch.testing.assert_close(form(ids), expected[ids])
        torch.testing.assert_close(form.score(query), query @ expected.t(), atol=1e-5, rtol=1e-5)
    assert all(t.numel() < N * D for t in (*form.parameters(), *form.buffers()))


def test_storage_counts_tables_projections_ranks_and_bounds():
    table = MixedDimTable(N, D, MixedDimConfig())
    report = table.storage()
    tables = (12 * 16 + 47 * 8 + 188 * 4 + 753 * 2) * 4
    projections = (8 + 4 + 2) * 16 * 4
    assert report.total_bytes == tables + projections + N * 2 + 5 * 4  # rank uint16, bounds int32
    assert report.byte_ratio == pytest.approx(N * D * 4 / report.total_bytes)


def test_the_budget_picks_the_smallest_alpha_that_meets_the_ratio():
    n, d = 20_001, 64
    config = MixedDimConfig(blocks=4, block_growth=3.0)
    solved = mixed_dim_budget(config, n, d, 6.0)
    assert (solved.blocks, solved.block_growth) == (4, 3.0)
    assert MixedDimTable(n, d, solved).storage().byte_ratio >= 6.0
    wider = MixedDimConfig(blocks=4, block_growth=3.0, alpha=round(solved.alpha - 0.01, 2))
    assert MixedDimTable(n, d, wider).storage().byte_ratio < 6.0
    with pytest.raises(ValueError, match="--ratio 500 is out of reach for mixed-dim with 4 blocks"):
        mixed_dim_budget(config, n, d, 500.0)


@pytest.mark.parametrize("options, message", [
    ({"blocks": 1}, "--blocks must be at least 2"),
    ({"block_growth": 1.0}, "--block-growth must be greater than 1"),
    ({"alpha": -0.1}, "--alpha must be non-negative"),
    ({"min_dim": 0}, "--min-dim must be at least 1"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        MixedDimConfig(**options)


def test_shapes_that_cannot_be_built_are_refused():
    with pytest.raises(ValueError, match="--min-dim 32 exceeds dim 16"):
        MixedDimTable(N, D, MixedDimConfig(min_dim=32))
    with pytest.raises(ValueError, match="too few for 4 blocks"):
        MixedDimTable(11, D, MixedDimConfig(block_growth=8.0))


def test_mixed_dim_is_registered_with_a_budget_and_item_counts():
    entry = compressors.registry.get("mixed-dim")
    assert entry.budget is mixed_dim_budget
    table = compressors.build("mixed-dim", num_items=N, dim=D)
    assert table.uses_item_counts() and not table.uses_teacher()
    assert table.storage().byte_ratio > 1
