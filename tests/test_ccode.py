"""ccode: compositional codes (Eq. 10-16), their deployed form and lookup-table scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecbench import compressors
from ecbench.compressors.ccode import CCodeConfig, CompositionalCodeTable, eq11_ratio
from ecbench.compressors.code_learning import (StraightThroughCodes, gumbel_softmax_sample,
                                               make_codes_unique)

NUM_ITEMS, DIM = 801, 16


@pytest.fixture(scope="module")
def teacher_table() -> torch.Tensor:
    """A clustered table, like trained item embeddings."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(40, DIM, generator=g) * 0.3
    table = centers[torch.randint(0, 40, (NUM_ITEMS,), generator=g)]
    table = table + 0.05 * torch.randn(NUM_ITEMS, DIM, generator=g)
    table[0] = 0
    return table


@pytest.fixture
def learned(teacher_table) -> CompositionalCodeTable:
    torch.manual_seed(0)
    table = compressors.build("ccode", CCodeConfig(M=3, K=16), num_items=NUM_ITEMS, dim=DIM)
    table.init_from_table(teacher_table)
    return table


def test_initialisation_from_the_teacher_reconstructs_it_well(learned, teacher_table):
    # the encoder's own choice of codes (before collisions are resolved for deployment)
    with torch.no_grad():
        codes = learned.code_distribution().argmax(-1)
        composite = learned.codebooks[torch.arange(3), codes].sum(1)
    error = ((composite[1:] - teacher_table[1:]) ** 2).sum(1).mean()
    spread = ((teacher_table[1:] - teacher_table[1:].mean(0)) ** 2).sum(1).mean()
    assert error < 0.1 * spread


def test_item_vector_is_the_sum_of_its_codewords(learned):
    learned.eval()
    learned.freeze_codes()
    codes = learned.codes
    expected = sum(learned.codebooks[i, codes[:, i]] for i in range(3))
    expected[0] = 0
    torch.testing.assert_close(learned.weight(), expected)


def test_training_samples_hard_codes_and_reports_the_mse(learned, teacher_table):
    learned.train()
    table = learned.weight()
    mse = learned.extra_loss()
    assert table.shape == (NUM_ITEMS, DIM) and torch.count_nonzero(table[0]) == 0
    direct = ((table[1:] - teacher_table[1:]) ** 2).sum(1).mean()
    torch.testing.assert_close(mse, direct)
    assert learned.extra_loss() is None  # consumed once per step


@pytest.mark.parametrize("code_sample", [1.0, 0.25])
def test_the_mse_gradient_is_twice_the_error_over_the_sampled_rows(teacher_table, code_sample):
    torch.manual_seed(0)
    table = CompositionalCodeTable(NUM_ITEMS, DIM, CCodeConfig(M=3, K=16,
                                                               code_sample=code_sample))
    table.init_from_table(teacher_table)
    table.train()
    composed = table.weight()
    composed.retain_grad()
    table.extra_loss().backward()
    resampled = composed.grad.abs().sum(1) > 0
    count = int(resampled.sum())
    assert count == (NUM_ITEMS - 1 if code_sample == 1.0 else round(0.25 * (NUM_ITEMS - 1)))
    expected = 2 * (composed - teacher_table)[resampled].detach() / count
    torch.testing.assert_close(composed.grad[resampled], expected)


def test_gradients_reach_codebooks_and_encoder_through_the_straight_through_codes(learned):
    learned.train()
    (learned.score(torch.randn(4, DIM)) ** 2).sum().backward()
    assert torch.count_nonzero(learned.codebooks.grad) > 0
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0
               for p in learned.encoder.parameters())


def test_mixup_is_used_in_training_only_unless_legacy_mode(teacher_table):
    torch.manual_seed(0)
    mixed = CompositionalCodeTable(NUM_ITEMS, DIM, CCodeConfig(M=2, K=32, eta=0.8))
    mixed.init_from_table(teacher_table)
    mixed.eval()
    composite = mixed.composite_table()
    torch.testing.assert_close(mixed.weight(), composite)  # deployed: compressed table alone
    mixed.config.eval_table = "mixed"
    torch.testing.assert_close(mixed.weight(), 0.8 * teacher_table + 0.2 * composite)
    query = torch.randn(3, DIM)
    legacy_scores = mixed.score(query)
    with mixed.compressed_scoring() as changed:  # the deployed figures of a legacy run
        assert changed
        torch.testing.assert_close(mixed.score(query), query @ composite.T)
    torch.testing.assert_close(mixed.score(query), legacy_scores)  # legacy scoring is back
    mixed.config.eval_table = "compressed"
    with mixed.compressed_scoring() as changed:
        assert not changed


def test_frozen_codes_are_unique_and_stored_as_uint8(learned):
    learned.eval()
    fixed = learned.freeze_codes()
    codes = learned.codes[1:].numpy()
    assert len(np.unique(codes, axis=0)) == NUM_ITEMS - 1
    report = learned.storage()
    assert report.tensors[0].dtype == "uint8" and f"collisions resolved: {fixed}" in report.notes


@pytest.mark.parametrize("batch", [1, 9])
def test_lookup_table_scoring_equals_dense_scoring(learned, batch):
    learned.eval()
    learned.freeze_codes()
    query = torch.randn(batch, DIM)
    fast = learned.score(query)
    # Eq. 10 by plain indexing: e_v = sum_i E_i[C_v^i], a path independent of the lookup tables
    codes = learned.codes.long()
    table = learned.codebooks[torch.arange(learned.M), codes].sum(1)
    table[0] = 0
    dense = query @ table.detach().T
    torch.testing.assert_close(fast, dense, atol=1e-4, rtol=0)
    assert torch.equal(fast[:, 1:].topk(20).indices, dense[:, 1:].topk(20).indices)
    assert torch.count_nonzero(fast[:, 0]) == 0  # padding scores like the zero vector


def test_deployed_state_survives_a_state_dict_round_trip(learned):
    learned.eval()
    learned.freeze_codes()
    copy = CompositionalCodeTable(NUM_ITEMS, DIM, CCodeConfig(M=3, K=16))
    copy.load_state_dict(learned.state_dict())
    assert copy.deployed
    torch.testing.assert_close(copy.eval().weight(), learned.weight())


def test_storage_ratios_for_the_papers_tmall_setting():
    table = CompositionalCodeTable(40728, 128, CCodeConfig(M=4, K=32))
    report = table.storage()
    assert report.paper_ratio == pytest.approx(40728 * 128 / (4 * 32 * 128 + 4 * 40728))
    assert round(report.paper_ratio) == 29  # the paper's Table 4
    assert report.total_bytes == 40728 * 4 + 4 * 32 * 128 * 4
    # uint8 codes: 40728 * 4 bytes + float32 codebooks -> 91x; bit-packed (5 bits a code) -> 125x
    assert report.byte_ratio == pytest.approx(40728 * 128 * 4 / (40728 * 4 + 65536))
    assert report.packed_bytes == -(-40728 * 4 * 5 // 8) + 65536
    assert report.to_dict()["packed_byte_ratio"] > 100
    assert eq11_ratio(40728, 128, 4, 32) == report.paper_ratio


def test_large_k_needs_uint16_codes_and_says_so():
    report = CompositionalCodeTable(1001, 8, CCodeConfig(M=2, K=300)).storage()
    assert report.tensors[0].dtype == "uint16"
    assert any("uint16" in note for note in report.notes)


@pytest.mark.parametrize("options, message", [
    ({"M": 0}, "--M must be at least 1"),
    ({"K": 1}, "--K must be at least 2"),
    ({"eta": 1.0}, "--eta must be in"),
])
def test_impossible_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        CCodeConfig(**options)


def test_more_codewords_than_items_is_rejected():
    with pytest.raises(ValueError, match="exceeds the 10 items"):
        CompositionalCodeTable(11, 8, CCodeConfig(M=2, K=16))


def test_too_few_codes_for_unique_items_are_shared_and_counted():
    """64 codes for 100 items (the paper's Table 4 has such shapes, e.g. M=1 K=32 on Tmall):
    items share codes, so the deployed table holds at most 64 distinct rows, and the storage
    notes say how many items share."""
    torch.manual_seed(0)
    table = CompositionalCodeTable(101, 8, CCodeConfig(M=2, K=8))
    table.init_from_table(torch.randn(101, 8))
    table.eval()
    table.deploy()
    codes = table.codes[1:].tolist()
    distinct_codes = len({tuple(c) for c in codes})
    assert distinct_codes <= 64 and int(table.collisions) == 100 - distinct_codes
    rows = table.weight()[1:]
    assert len({tuple(r) for r in rows.tolist()}) == distinct_codes
    assert f"items sharing one: {100 - distinct_codes}" in " ".join(table.storage().notes)
    untrained = CompositionalCodeTable(101, 8, CCodeConfig(M=2, K=8))
    untrained.deploy_untrained()  # random codes drawn with repeats where they must repeat
    assert untrained.codes[1:].max() < 8


def test_a_teacher_of_another_shape_is_rejected():
    table = CompositionalCodeTable(101, 8, CCodeConfig(M=2, K=16))
    with pytest.raises(ValueError, match="another dataset or dim"):
        table.init_from_table(torch.zeros(101, 16))


def test_colliding_codes_move_to_the_nearest_free_code():
    codes = np.array([[0, 0], [1, 2], [1, 2], [1, 2]])
    log_alpha = np.log(np.full((4, 2, 4), 0.1))
    log_alpha[1, :, [1, 2]] = np.log(0.5)  # item 1 is the surest of the code: it keeps it
    log_alpha[2, 0, 3] = np.log(0.3)  # item 2's runner-up: codeword 3 in codebook 0
    log_alpha[3, 1, 3] = np.log(0.3)  # item 3's runner-up: codeword 3 in codebook 1
    unique, moved = make_codes_unique(codes, log_alpha, 4)
    assert moved == 2
    assert [tuple(c) for c in unique[1:]] == [(1, 2), (3, 2), (1, 3)]


@pytest.mark.parametrize("sampled", [None, [3, 17, 40]], ids=["every item", "a sample"])
def test_straight_through_codes_match_the_one_hot_product(sampled):
    """Forward and gradients equal the one-hot product with the straight-through estimator on
    the sampled items (every item when None); row 0, the padding item, stays zero."""
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 8, (50, 3), generator=g)
    rows = None if sampled is None else torch.tensor(sampled)
    logits = torch.randn(len(codes) if rows is None else len(rows), 3, 8, generator=g,
                         requires_grad=True)
    codebooks = torch.randn(3, 8, 6, generator=g, requires_grad=True)
    upstream = torch.randn(50, 6, generator=g)
    soft = logits.softmax(-1)
    codes[slice(None) if rows is None else rows] = soft.argmax(-1)
    ours = StraightThroughCodes.apply(soft, rows, codes, codebooks)
    (ours * upstream).sum().backward()
    ours_grads = logits.grad.clone(), codebooks.grad.clone()
    logits.grad, codebooks.grad = None, None
    soft = logits.softmax(-1)
    hard = torch.nn.functional.one_hot(codes, 8).float()
    hard = (hard - soft.detach() + soft if rows is None
            else hard.index_put((rows,), hard[rows] - soft.detach() + soft))
    reference = torch.einsum("nmk,mkd->nd", hard, codebooks)
    reference = reference * (torch.arange(50) > 0).float().unsqueeze(1)
    (reference * upstream).sum().backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_grads[0], logits.grad)
    torch.testing.assert_close(ours_grads[1], codebooks.grad)


def test_gumbel_samples_follow_the_code_distribution():
    torch.manual_seed(0)
    probs = torch.tensor([0.6, 0.3, 0.1])
    log_alpha = probs.log().expand(20000, 1, 3).contiguous()
    soft, picks = gumbel_softmax_sample(log_alpha + 5.0, 0.3)  # any shift of the logits
    assert torch.equal(soft.argmax(-1), picks)
    picks = picks.flatten()
    frequency = torch.bincount(picks, minlength=3).float() / len(picks)
    torch.testing.assert_close(frequency, probs, atol=0.015, rtol=0)


def test_sampled_code_learning_resamples_only_a_fraction_of_items():
    torch.manual_seed(0)
    table = CompositionalCodeTable(401, 8, CCodeConfig(M=2, K=32, code_sample=0.05))
    table.init_from_table(torch.randn(401, 8))
    before = table.codes.clone()
    table.train()
    weight = table.weight()
    assert (table.codes != before).any(1).sum() <= 20  # 5% of 400 items re-sampled at most
    torch.testing.assert_close(weight[1:], table.codebooks[torch.arange(2), table.codes[1:]].sum(1))
    (weight.sum() + table.extra_loss()).backward()
    assert table.encoder.hidden.weight.grad.abs().sum() > 0
    assert table.codebooks.grad.abs().sum() > 0


def test_code_sample_must_be_a_fraction():
    with pytest.raises(ValueError, match="--code-sample must be in"):
        CCodeConfig(code_sample=0.0)


def test_evaluation_before_deploy_scores_with_the_codes_deploy_freezes():
    torch.manual_seed(1)
    table = CompositionalCodeTable(301, 8, CCodeConfig(M=2, K=32))
    table.init_from_table(torch.randn(301, 8).round())  # many identical rows: colliding codes
    table.eval()
    with torch.no_grad():
        before = table.weight()
        table.deploy()
        after = table.weight()
    assert int(table.collisions) > 0
    torch.testing.assert_close(before, after)
    assert len(torch.unique(after[1:], dim=0)) == 300  # unique codes, unique rows


def test_without_gumbel_noise_training_uses_the_argmax_codes():
    logits = torch.randn(200, 3, 8)
    soft, index = gumbel_softmax_sample(logits, 0.3, scale=0.0)
    assert torch.equal(index, logits.argmax(-1))
    torch.testing.assert_close(soft, (logits / 0.3).softmax(-1))
    with pytest.raises(ValueError, match="--gumbel-scale"):
        CCodeConfig(gumbel_scale=-1.0)


def test_codes_freeze_after_the_given_epochs_and_then_only_codebooks_learn(learned):
    learned.config = CCodeConfig(M=3, K=16, freeze_codes_after=1)
    assert learned.start_epoch(1) == {} and not learned.deployed
    info = learned.start_epoch(2)
    assert learned.deployed and info == {"codes_frozen": {"collisions": int(learned.collisions)}}
    codes = learned.codes.clone()
    learned.train()
    (learned.score(torch.randn(4, DIM)) ** 2).sum().backward()
    assert torch.count_nonzero(learned.codebooks.grad) > 0
    assert all(p.grad is None for p in learned.encoder.parameters())
    assert learned.start_epoch(3) == {}  # frozen once
    learned.deploy()  # the final deployment keeps the codes the codebooks were trained on
    assert torch.equal(learned.codes, codes)


def test_codes_frozen_from_the_start_stay_frozen_for_distillation(learned):
    learned.config = CCodeConfig(M=3, K=16, freeze_codes_after=0)
    learned.start_epoch(1)
    assert learned.deployed
    learned.undeploy()
    assert learned.deployed
    with pytest.raises(ValueError, match="--freeze-codes-after"):
        CCodeConfig(freeze_codes_after=-1)


def test_initial_kmeans_codes_are_kept_and_reconstruct_at_least_as_well(teacher_table):
    """`--initial-codes kmeans`: the residual k-means assignments themselves are deployed (made
    unique), not the encoder's imitation of them."""
    def deployed(initial_codes: str) -> CompositionalCodeTable:
        torch.manual_seed(0)
        table = compressors.build("ccode", CCodeConfig(M=3, K=16, freeze_codes_after=0,
                                                       initial_codes=initial_codes),
                                  num_items=NUM_ITEMS, dim=DIM)
        table.init_from_table(teacher_table)
        assignments = table.codes.clone()
        table.start_epoch(1)  # codes frozen from the start
        return table, assignments

    kept, assignments = deployed("kmeans")
    imitated, _ = deployed("encoder")
    moved = (kept.codes[1:] != assignments[1:]).any(1)
    assert moved.sum() == kept.collisions.item()  # only collisions moved
    assert len(torch.unique(kept.codes[1:], dim=0)) == NUM_ITEMS - 1

    def error(table):
        with torch.no_grad():
            return ((table.weight()[1:] - teacher_table[1:]) ** 2).sum(1).mean()
    assert error(kept) <= error(imitated)
    with pytest.raises(ValueError, match="needs --freeze-codes-after 0"):
        CCodeConfig(initial_codes="kmeans")


def test_random_codebooks_replace_the_last_kmeans_codebooks_with_balanced_random_codes(
        teacher_table):
    """`--random-codebooks R`: the first M-R codebooks keep their residual k-means codes (the
    same as without the option), the last R are random, each codeword used equally often."""
    def initial_codes(random_codebooks: int) -> torch.Tensor:
        torch.manual_seed(0)
        table = compressors.build("ccode", CCodeConfig(
            M=3, K=16, freeze_codes_after=0, initial_codes="kmeans",
            random_codebooks=random_codebooks), num_items=NUM_ITEMS, dim=DIM)
        table.init_from_table(teacher_table)
        return table.codes[1:].clone()

    kmeans_only, mixed = initial_codes(0), initial_codes(1)
    assert torch.equal(mixed[:, :2], kmeans_only[:, :2])
    counts = torch.bincount(mixed[:, 2], minlength=16)
    assert counts.max() - counts.min() <= 1
    # random, not the k-means clusters again: items sharing a k-means codeword spread out
    same_cluster = kmeans_only[:, 2] == kmeans_only[1, 2]
    assert len(torch.unique(mixed[same_cluster, 2])) > 4
    with pytest.raises(ValueError, match="needs --initial-codes kmeans"):
        CCodeConfig(freeze_codes_after=0, random_codebooks=1)
    with pytest.raises(ValueError, match=r"--random-codebooks must be in \[0, M=4\]"):
        CCodeConfig(freeze_codes_after=0, initial_codes="kmeans", random_codebooks=5)


def test_an_optional_option_takes_none_or_its_type():
    from ecbench.bench.training.config import coerce_option
    from ecbench.bench.errors import ConfigError

    assert coerce_option(CCodeConfig, "freeze_codes_after", "2") == 2
    assert coerce_option(CCodeConfig, "freeze_codes_after", "none") is None
    with pytest.raises(ConfigError, match="--freeze-codes-after takes an integer"):
        coerce_option(CCodeConfig, "freeze_codes_after", "soon")


@pytest.mark.parametrize("training, eval_table", [(True, "compressed"), (False, "mixed")])
def test_frozen_codes_with_mixup_score_like_the_mixed_table(learned, training, eval_table):
    learned.freeze_codes()
    learned.config = CCodeConfig(M=3, K=16, eta=0.8, eval_table=eval_table)
    learned.train(training)
    query = torch.randn(5, DIM, requires_grad=True)
    weights = torch.randn(5, NUM_ITEMS)
    fast = learned.score(query)
    (fast * weights).sum().backward()
    fast_grads = query.grad.clone(), learned.codebooks.grad.clone()
    query.grad, learned.codebooks.grad = None, None
    dense = query @ learned.weight().t()  # the mixed table itself
    (dense * weights).sum().backward()
    torch.testing.assert_close(fast, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_grads, (query.grad, learned.codebooks.grad), rtol=1e-4,
                               atol=1e-4)


def test_frozen_codes_look_rows_up_like_the_table_with_the_same_gradients(learned):
    learned.freeze_codes()
    learned.config = CCodeConfig(M=3, K=16, eta=0.8)
    learned.train()
    ids = torch.tensor([[0, 5, 7], [800, 1, 0]])
    weights = torch.randn(2, 3, DIM)
    rows = learned(ids)
    (rows * weights).sum().backward()
    fast_grad = learned.codebooks.grad.clone()
    learned.codebooks.grad = None
    expected = learned.weight()[ids]
    (expected * weights).sum().backward()
    torch.testing.assert_close(rows, expected)
    torch.testing.assert_close(fast_grad, learned.codebooks.grad)
    assert torch.count_nonzero(rows[0, 0]) == 0  # padding
