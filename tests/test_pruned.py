"""`prune`: gradual magnitude pruning (Zhu & Gupta's cubic schedule) checked against plain
Python, CSR arrays against scipy.sparse, the deployed rows and scores against the masked table,
honest bytes and the byte budget."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch

from ecbench import compressors
from ecbench.compressors.pruned import (CSRForm, PruneConfig, PrunedTable, csr_row_sums,
                                        prune_budget)

N, D = 301, 8
TOTAL = (N - 1) * D  # entries of the real rows


def reference_mask(table: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` entries of largest |w| among rows 1.. (row 0 never), by numpy argsort."""
    flat = np.abs(table[1:]).ravel()
    mask = np.zeros(flat.size, dtype=bool)
    mask[np.argsort(-flat, kind="stable")[:keep]] = True
    return np.concatenate([np.zeros((1, table.shape[1]), dtype=bool), mask.reshape(-1, table.shape[1])])


def cubic(target: float, prune_epochs: int, epoch: int) -> float:
    """Zhu & Gupta: s_t = s_f + (s_i - s_f)(1 - (t - t0) / (n dt))^3 with s_i = 0, t0 = epoch 1."""
    s_f = 1 - target
    t = min(epoch - 1, prune_epochs)
    return 1 - (s_f + (0 - s_f) * (1 - t / prune_epochs) ** 3)


def test_the_density_follows_the_cubic_schedule_down_to_the_target():
    torch.manual_seed(0)
    table = PrunedTable(N, D, PruneConfig(density=0.2, prune_epochs=3))
    densities = []
    for epoch in range(1, 7):
        before = (table.table * table.mask).detach().numpy()
        info = table.start_epoch(epoch)
        keep = round(cubic(0.2, 3, epoch) * TOTAL)
        assert int(table.mask.sum()) == keep
        assert info["density"] == pytest.approx(keep / TOTAL)
        np.testing.assert_array_equal(table.mask.numpy(), reference_mask(before, keep))
        densities.append(info["density"])
    assert densities[0] == 1.0  # the first epoch trains the dense table
    assert densities[3:] == [pytest.approx(0.2)] * 3  # the target from epoch P + 1 on
    assert densities == sorted(densities, reverse=True)


def test_pruned_entries_stay_zero_through_optimizer_steps():
    torch.manual_seed(1)
    table = PrunedTable(N, D, PruneConfig(density=0.3, prune_epochs=2))
    optimizer = torch.optim.Adam(table.parameters(), lr=0.05, weight_decay=1e-3)
    table.train()
    previous = table.mask.clone()
    for epoch in range(1, 5):
        table.start_epoch(epoch)
        assert not (table.mask & ~previous).any()  # a pruned entry never returns
        previous = table.mask.clone()
        for _ in range(3):  # steps with momentum built on entries since pruned
            query = torch.randn(4, D)
            with table.shared_weight():
                loss = torch.nn.functional.cross_entropy(
                    table.score(query), torch.randint(1, N, (4,))) + table(
                    torch.randint(1, N, (6,))).square().sum()
            optimizer.zero_grad()
            loss.backward()
            assert torch.all(table.table.grad[~table.mask] == 0)
            optimizer.step()
            weight = table.weight().detach()
            assert torch.all(weight[~table.mask] == 0) and torch.all(weight[0] == 0)
            assert int((weight != 0).sum()) == int(table.mask.sum())
    assert int(table.mask.sum()) == round(0.3 * TOTAL)


def trained_and_deployed(density: float = 0.25, dim: int = D) -> tuple[PrunedTable, np.ndarray]:
    """A table pruned and trained a little, deployed; and its masked table by numpy."""
    torch.manual_seed(2)
    table = PrunedTable(N, dim, PruneConfig(density=density, prune_epochs=2))
    optimizer = torch.optim.Adam(table.parameters(), lr=0.05)
    for epoch in (1, 2):
        table.start_epoch(epoch)
        loss = table.weight().sin().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    masked = (table.table * table.mask).detach().numpy()
    expected = masked * reference_mask(masked, round(density * (N - 1) * dim))
    table.deploy()
    return table, expected


def test_the_deployed_csr_arrays_are_scipys_of_the_masked_table():
    table, expected = trained_and_deployed()
    csr = scipy.sparse.csr_matrix(expected)
    assert table.values.dtype == torch.float32 and table.columns.dtype == torch.uint8
    assert table.row_pointers.dtype == torch.int32
    np.testing.assert_array_equal(table.values.numpy(), csr.data)
    np.testing.assert_array_equal(table.columns.numpy(), csr.indices)
    np.testing.assert_array_equal(table.row_pointers.numpy(), csr.indptr)
    assert csr.nnz == round(0.25 * TOTAL)  # the exact target density


def test_wide_tables_store_their_columns_in_uint16():
    table, expected = trained_and_deployed(density=0.1, dim=300)
    assert table.columns.dtype == torch.uint16
    np.testing.assert_array_equal(table.columns.numpy().astype(np.int64),
                                  scipy.sparse.csr_matrix(expected).indices)
    assert [t.dtype for t in table.storage().tensors] == ["float32", "uint16", "int32"]


@pytest.mark.parametrize("exportable", [False, True])
def test_deployed_rows_and_scores_are_the_masked_tables(exportable):
    table, expected = trained_and_deployed()
    dense = torch.from_numpy(expected)
    ids = torch.tensor([[0, 1, 5], [N - 1, 150, 0]])
    query = torch.randn(3, D)
    table.eval()
    with torch.no_grad():
        torch.testing.assert_close(table.weight(), dense)
        torch.testing.assert_close(table(ids), dense[ids])
        torch.testing.assert_close(table.score(query), query @ dense.t())
        form = table.inference_form(exportable)
        assert isinstance(form, CSRForm)
        with form.call():
            torch.testing.assert_close(form(ids), dense[ids])
            torch.testing.assert_close(form.score(query), query @ dense.t(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(form.score(query[:1]), query[:1] @ dense.t(), atol=1e-5,
                                       rtol=1e-5)
    dense_held = [t for t in (*form.parameters(), *form.buffers())
                  if t.layout == torch.strided and t.numel() >= N * D]
    assert not dense_held  # no dense table in the deployed form (eager: a sparse CSR tensor)
    assert {t.dtype for t in form.state_dict().values()} == {torch.float32, torch.uint8,
                                                             torch.int32, torch.int64}


def test_csr_row_sums_match_numpys_sum_of_each_run():
    """Empty rows anywhere (the padding row, runs of them, the last rows), rows across blocks,
    and a huge first block before tiny rows: a float32 running sum over all the entries would
    lose the tiny rows."""
    rng = np.random.default_rng(0)
    lengths = np.array([0, 4, 0, 0, 1, 5, 0, 2, 0, 4, 0, 0])
    pointers = np.concatenate([[0], lengths.cumsum()])
    terms = rng.normal(size=(3, 20)) * 1e-3  # whole blocks of 4, past the last pointer (16)
    terms[:, :4] = 1e6  # the first block
    expected = np.array([[row[start:stop].sum() for start, stop in zip(pointers, pointers[1:])]
                         for row in terms])
    sums = csr_row_sums(torch.from_numpy(terms).float(), torch.from_numpy(pointers), 4)
    assert sums.dtype == torch.float32 and sums.shape == (3, len(lengths))
    np.testing.assert_allclose(sums.numpy(), expected, rtol=1e-5, atol=1e-9)


def test_evaluation_before_deploy_sees_the_deployed_table():
    torch.manual_seed(3)
    table = PrunedTable(N, D, PruneConfig(density=0.2, prune_epochs=3))
    table.start_epoch(2)  # the schedule is still above the target
    assert int(table.mask.sum()) > round(0.2 * TOTAL)
    table.eval()
    validated = table.weight().detach().clone()
    assert int((validated != 0).sum()) == round(0.2 * TOTAL)
    table.deploy()
    torch.testing.assert_close(table.weight(), validated)


def test_the_deployed_model_loads_and_undeploys_to_the_masked_training_table():
    table, expected = trained_and_deployed()
    fresh = PrunedTable(N, D, PruneConfig(density=0.25, prune_epochs=2))
    fresh.load_state_dict(table.state_dict())
    assert fresh.deployed
    torch.testing.assert_close(fresh.weight(), torch.from_numpy(expected))
    fresh.undeploy()
    fresh.train()
    assert not fresh.deployed
    torch.testing.assert_close(fresh.weight(), torch.from_numpy(expected))
    assert fresh.weight().requires_grad
    assert fresh.start_epoch(9)["density"] == pytest.approx(round(0.25 * TOTAL) / TOTAL)


def test_storage_counts_values_columns_and_row_pointers():
    table = PrunedTable(N, D, PruneConfig(density=0.25))
    nnz = round(0.25 * TOTAL)
    report = table.storage()
    assert report.total_bytes == nnz * 4 + nnz * 1 + (N + 1) * 4
    assert [t.name for t in report.tensors] == ["values", "columns", "row_pointers"]
    assert report.byte_ratio == pytest.approx(N * D * 4 / (nnz * 5 + (N + 1) * 4))


def test_the_budget_picks_the_largest_density_that_meets_the_ratio():
    n, d = 10_001, 64
    solved = prune_budget(PruneConfig(prune_epochs=5), n, d, 8.0)
    assert solved.prune_epochs == 5
    nnz = round(solved.density * (n - 1) * d)
    full = n * d * 4

    def ratio(kept: int) -> float:
        return full / (kept * 5 + (n + 1) * 4)

    assert PrunedTable(n, d, solved).storage().byte_ratio >= 8.0 and ratio(nnz) >= 8.0
    assert ratio(nnz + 1) < 8.0  # one more entry would miss it
    with pytest.raises(ValueError, match=r"--ratio 64 is out of reach for prune \(byte ratio at most"):
        prune_budget(PruneConfig(), n, d, 64.0)  # the row pointers alone cost a 64th


@pytest.mark.parametrize("options, message", [
    ({"density": 0.0}, r"--density must be in \(0, 1\)"),
    ({"density": 1.0}, r"--density must be in \(0, 1\)"),
    ({"density": -0.5}, r"--density must be in \(0, 1\)"),
    ({"prune_epochs": 0}, "--prune-epochs must be at least 1"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**options)


def test_a_density_keeping_nothing_and_an_undeployed_form_are_refused():
    with pytest.raises(ValueError, match="keeps no entry"):
        PrunedTable(N, D, PruneConfig(density=1e-5))
    with pytest.raises(ValueError, match="before deploy"):
        PrunedTable(N, D, PruneConfig()).inference_form()


def test_prune_is_registered_with_a_budget():
    entry = compressors.registry.get("prune")
    assert entry.budget is prune_budget and entry.config is PruneConfig
    assert compressors.build("prune", num_items=N, dim=D).storage().byte_ratio > 1
