"""`hybrid` (ours): the hottest items by count keep exact rows, the others are ccode items;
checked against plain numpy (hot ids by argsort, codeword sums), with exact scoring, the inner
ccode table's hooks reached, honest bytes and the byte budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecbench import compressors
from ecbench.compressors.hybrid import HybridConfig, HybridForm, HybridTable, hybrid_budget

N, D, H, M, K = 401, 8, 20, 3, 8


def counts_for(seed: int) -> np.ndarray:
    counts = np.random.default_rng(seed).integers(0, 50, size=N)  # ties among the hottest too
    counts[0] = 0
    return counts


def arranged(seed: int = 0, teacher: bool = True, **options) -> tuple[HybridTable, np.ndarray,
                                                                        np.ndarray]:
    """A hybrid table given counts and a teacher table, as a run arranges it."""
    torch.manual_seed(seed)
    table = HybridTable(N, D, HybridConfig(exact_rows=H, M=M, K=K, **options))
    counts = counts_for(seed)
    table.init_from_counts(torch.from_numpy(counts))
    x = np.random.default_rng(seed + 100).normal(0, 0.1, size=(N, D)).astype(np.float32)
    if teacher:
        table.init_from_table(torch.from_numpy(x))
    return table, counts, x


def hot_and_cold(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The H most frequent items (ties by id) sorted, and the other real items in id order."""
    hot = np.sort((np.argsort(-counts[1:], kind="stable") + 1)[:H])
    cold = np.setdiff1d(np.arange(1, N), hot)
    return hot, cold


def reference_table(table: HybridTable, counts: np.ndarray) -> np.ndarray:
    """Hot items: their exact rows; cold item j (in id order): the sum of its M codewords."""
    hot, cold = hot_and_cold(counts)
    codes = table.coded.codes.numpy()  # [1 + cold, M], inner item 0 is padding
    codebooks = table.coded.codebooks.detach().numpy()  # [M, K, D]
    out = np.zeros((N, D), dtype=np.float32)
    out[hot] = table.hot_rows.detach().numpy()
    for j, item in enumerate(cold, start=1):
        out[item] = sum(codebooks[i, codes[j, i]] for i in range(M))
    return out


def test_the_hottest_items_keep_the_teachers_rows_the_others_its_codes():
    table, counts, teacher = arranged()
    hot, cold = hot_and_cold(counts)
    np.testing.assert_array_equal(table.hot_ids.numpy(), hot)
    np.testing.assert_array_equal(table.hot_rows.detach().numpy(), teacher[hot])
    inner_teacher = table.coded.teacher.numpy()
    np.testing.assert_array_equal(inner_teacher[1:], teacher[cold])  # codes learn the cold rows
    assert table.coded.num_items == N - H
    table.deploy()
    table.eval()
    expected = torch.from_numpy(reference_table(table, counts))
    with torch.no_grad():
        weight = table.weight()
        torch.testing.assert_close(weight, expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(weight[torch.from_numpy(hot)], torch.from_numpy(teacher[hot]))
        ids = torch.tensor([[0, int(hot[0]), int(cold[0])], [int(cold[-1]), int(hot[-1]), 0]])
        torch.testing.assert_close(table(ids), expected[ids], atol=1e-6, rtol=1e-6)
        query = torch.randn(5, D)
        torch.testing.assert_close(table.score(query), query @ expected.t(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(table.score(query[:1]), query[:1] @ expected.t(), atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.parametrize("exportable", [False, True])
def test_the_inference_form_gives_the_same_rows_and_scores(exportable):
    table, counts, _ = arranged(seed=1)
    table.deploy()
    expected = torch.from_numpy(reference_table(table, counts))
    form = table.inference_form(exportable)
    assert isinstance(form, HybridForm) and form.hot_ids.element_size() == 2  # uint16 bits
    assert form.coded.codes.dtype == torch.uint8 and form.coded.codes.shape == (M, N - H)
    ids = torch.tensor([[1, 0, 17], [N - 1, 200, 3]])
    query = torch.randn(4, D)
    with torch.no_grad(), form.call():
        torch.testing.assert_close(form(ids), expected[ids], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(form.score(query), query @ expected.t(), atol=1e-5, rtol=1e-5)
    assert all(t.numel() < N * D for t in (*form.parameters(), *form.buffers()))


def test_training_reaches_hot_rows_codebooks_and_encoder_and_adds_the_mse():
    table, _, _ = arranged(seed=2)
    table.train()
    with table.shared_weight():
        loss = table.score(torch.randn(4, D)).logsumexp(1).sum() + table(
            torch.from_numpy(table.hot_ids.numpy()[:3])).sum()
    extra = table.extra_loss()
    assert extra is not None  # ccode's reconstruction MSE (Eq. 12) of the cold items
    (loss + extra).backward()
    for name, param in table.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_distillation_hooks_reach_the_inner_ccode_table():
    table, counts, teacher = arranged(seed=3, eta=0.5, freeze_codes_after=1)
    _, cold = hot_and_cold(counts)
    live = torch.from_numpy(teacher * 2)
    table.follow_teacher_table(live)
    np.testing.assert_array_equal(table.coded.teacher[1:].numpy(), 2 * teacher[cold])
    table.set_mixup(0.25)
    assert table.coded.config.eta == 0.25
    with table.mixed_scoring() as mixes:
        assert mixes and table.coded.config.eval_table == "mixed"
    assert table.coded.config.eval_table == "compressed"
    assert table.start_epoch(1) == {}
    assert "codes_frozen" in table.start_epoch(2) and table.coded.deployed
    table.undeploy()
    assert not table.coded.deployed


def test_the_deployed_model_loads_with_its_hot_items():
    table, counts, _ = arranged(seed=4)
    table.deploy()
    fresh = HybridTable(N, D, HybridConfig(exact_rows=H, M=M, K=K))
    fresh.load_state_dict(table.state_dict())
    assert fresh.coded.deployed
    np.testing.assert_array_equal(fresh.hot_ids.numpy(), hot_and_cold(counts)[0])
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.weight(), torch.from_numpy(reference_table(table, counts)),
                                   atol=1e-6, rtol=1e-6)


def test_counts_come_before_the_teacher_and_untrained_deployment_needs_neither():
    table, _, _ = arranged(seed=5)
    with pytest.raises(ValueError, match="init_from_counts must come before init_from_table"):
        table.init_from_counts(torch.from_numpy(counts_for(6)))
    untrained = HybridTable(N, D, HybridConfig(exact_rows=H, M=M, K=K))
    untrained.deploy_untrained(seed=1)
    assert untrained.coded.deployed and len(set(untrained.hot_ids.tolist())) == H
    assert torch.all(untrained.weight()[0] == 0)


def test_storage_counts_hot_rows_hot_ids_codes_and_codebooks():
    table = HybridTable(N, D, HybridConfig(exact_rows=H, M=M, K=K))
    report = table.storage()
    assert report.total_bytes == H * D * 4 + H * 2 + (N - H) * M * 1 + M * K * D * 4
    assert [t.name for t in report.tensors] == ["hot_rows", "hot_ids", "codes", "codebooks"]
    default = HybridTable(N, D, HybridConfig(M=M, K=K))
    assert default.exact_rows == 4  # 1% of the 400 items


def test_the_budget_picks_the_most_exact_rows_that_meet_the_ratio():
    n, d = 20_001, 64
    solved = hybrid_budget(HybridConfig(M=4, K=32), n, d, 20.0)
    assert (solved.M, solved.K) == (4, 32)

    def table_bytes(rows: int) -> int:  # by hand: hot rows, uint16 ids, uint8 codes, codebooks
        return rows * d * 4 + rows * 2 + (n - rows) * 4 + 4 * 32 * d * 4

    full = n * d * 4
    assert HybridTable(n, d, solved).storage().total_bytes == table_bytes(solved.exact_rows)
    assert full / table_bytes(solved.exact_rows) >= 20.0 > full / table_bytes(solved.exact_rows + 1)
    with pytest.raises(ValueError, match="--ratio 200 is out of reach for hybrid with M=4 K=32"):
        hybrid_budget(HybridConfig(M=4, K=32), n, d, 200.0)


@pytest.mark.parametrize("options, message", [
    ({"exact_rows": -1}, "--exact-rows must be positive"),
    ({"K": 1}, "--K must be at least 2"),
    ({"M": 0}, "--M must be at least 1"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        HybridConfig(**options)


def test_too_many_exact_rows_are_refused():
    with pytest.raises(ValueError, match="leaves 5 of the 400 items to the codes, fewer than the K=8"):
        HybridTable(N, D, HybridConfig(exact_rows=395, M=M, K=K))


def test_hybrid_is_registered_as_ours_with_a_budget():
    entry = compressors.registry.get("hybrid")
    assert entry.budget is hybrid_budget and entry.description.startswith("ours")
    table = compressors.build("hybrid", HybridConfig(M=M, K=K), num_items=N, dim=D)
    assert table.uses_item_counts() and table.uses_teacher()
