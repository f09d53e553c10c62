"""Repeat-aware scoring (backbones.repeat: bonus and mixture) and the session recency baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecbench.backbones import SASRec, SASRecConfig
from ecbench.bench.evaluation.cases import session_recency_ranks
from ecbench.bench.data.batching import Examples
from ecbench.bench.training.config import RunConfig
from ecbench.bench.errors import ConfigError
from ecbench.bench.deploy.recommender import DeployedRecommender, deployable_model
from ecbench.bench.training.distill import DistillationObjective, DistillationPair, DistillConfig
from ecbench.bench.deploy.export import example_inputs, export, load, missing_runtime
from ecbench.bench.evaluation.metrics import pessimistic_ranks, recency_ranks
from ecbench.bench.report.paper_tables import at_paper_settings
from ecbench.bench.report.repeat_table import repeat_cells, repeat_table
from ecbench.bench.report.tables import variant
from ecbench.bench.training.teacher import Teacher, copy_encoder
from ecbench.bench.training.train import Trainer, build_model, prepare, training_loss
from ecbench.compressors.full import FullTable
from helpers import assert_same_top_k, padded
from paper_records import record, student

NUM_ITEMS, DIM = 31, 8


def sasrec_with(head: str, recencies: int) -> SASRec:
    """A small SASRec over a full table with the repeat head `head`, in eval mode."""
    torch.manual_seed(0)
    model = SASRec(FullTable(NUM_ITEMS, DIM), SASRecConfig(dropout=0.0), max_len=12)
    model.enable_repeat(head, recencies)
    return model.eval()


@pytest.fixture
def model() -> SASRec:
    return sasrec_with("bonus", recencies=3)


def test_a_fresh_bonus_changes_no_score(model):
    seq = padded([[1, 2, 3], [4], [5, 6, 5, 8, 9]])
    with torch.no_grad():
        plain = model.compressor.score(model.encode(seq, (seq > 0).sum(1)))
        torch.testing.assert_close(model.score(seq, (seq > 0).sum(1)), plain, atol=0, rtol=0)


def test_the_bonus_lands_on_the_sessions_items_by_recency(model):
    seq = padded([[5, 7, 5], [9, 1, 2, 3, 4, 6]], width=8)
    with torch.no_grad():
        model.repeat.recency.copy_(torch.tensor([3.0, 2.0, 1.0]))
        session = model.encode(seq, (seq > 0).sum(1))
        added = model.score_session(session, seq) - model.compressor.score(session)
    expected = torch.zeros(2, NUM_ITEMS)
    expected[0, 5] = 3.0 + 1.0  # the last item (recency 0) and the first (recency 2)
    expected[0, 7] = 2.0
    # the second session's items beyond the last recency all share its bonus
    expected[1, [6, 4, 3, 2, 1, 9]] = torch.tensor([3.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    torch.testing.assert_close(added, expected)
    assert (added[:, 0] == 0).all()  # padding never gains


def test_the_gate_reads_the_session_vector(model):
    seq = padded([[5, 7], [2]])
    with torch.no_grad():
        model.repeat.gate.bias.fill_(0.5)
        model.repeat.gate.weight.fill_(0.1)
        session = model.encode(seq, (seq > 0).sum(1))
        added = model.score_session(session, seq) - model.compressor.score(session)
        gate = 0.5 + 0.1 * session.sum(1)
    torch.testing.assert_close(added[0, 5], gate[0])
    torch.testing.assert_close(added[1, 2], gate[1])


def test_training_reaches_the_bonus_and_the_deployed_model_keeps_it(tiny_synthetic):
    config = RunConfig(data="tiny", dim=16, epochs=1, repeat_bonus=True,
                       backbone_options={"dropout": 0.2})
    prepared = prepare(config, tiny_synthetic)
    torch.manual_seed(0)
    model = build_model(config, tiny_synthetic.num_items)
    assert model.repeat is not None and model.repeat.recency.numel() == config.max_len
    batch = next(prepared.fit.batches(64, config.max_len))
    training_loss(model, batch).backward()
    assert model.repeat.recency.grad.abs().sum() > 0
    assert model.repeat.gate.weight.grad.abs().sum() > 0
    # the encoder's parameters (and so the deployed bytes) count the bonus
    assert any(p is model.repeat.recency for p in model.non_item_parameters())
    with torch.no_grad():
        model.repeat.recency.fill_(100.0)  # so large that the session's items lead
    deployed = DeployedRecommender(model.eval(), k=3)
    _, items = deployed(batch.items[:4], batch.lengths[:4])
    for row, top in zip(batch.items[:4], items):
        own = set(row[row > 0].tolist())
        assert set(top.tolist()) <= own or own <= set(top.tolist())


@pytest.mark.slow
def test_on_real_repeat_clicks_the_bonus_lifts_validation(tmall_slice, tmp_path):
    """Tmall's next clicks often return to the session: one epoch with the bonus beats one
    without on validation, mostly through the repeat cases."""
    scores = {}
    for bonus in (None, True):
        config = RunConfig(data="tmall-first-3000", dim=32, epochs=1, repeat_bonus=bonus,
                           backbone_options={"layers": 1, "heads": 1, "dropout": 0.5})
        torch.manual_seed(0)
        model = build_model(config, tmall_slice.num_items)
        state = Trainer(config, prepare(config, tmall_slice), model,
                        tmp_path / f"{bonus}.pt").fit()
        scores[bonus] = state.best_value
    assert scores[True] > scores[None] + 2.0, scores


def test_a_distillation_scores_teacher_and_student_with_their_bonus(tiny_synthetic):
    config = RunConfig(data="tiny", dim=16, compressor="ccode",
                       compressor_options={"M": 2, "K": 32}, repeat_bonus=True,
                       backbone_options={"dropout": 0.2})
    torch.manual_seed(0)
    teacher = build_model(RunConfig(dim=16, repeat_bonus=True, backbone_options={"dropout": 0.2}),
                          tiny_synthetic.num_items)
    student = build_model(config, tiny_synthetic.num_items)
    with torch.no_grad():
        student.compressor.init_from_table(teacher.compressor.weight())
    pair = DistillationPair(teacher, student, DistillConfig())
    prepared = prepare(config, tiny_synthetic)
    objective = DistillationObjective(pair, torch.from_numpy(prepared.hot_items), 2)
    objective.start_epoch(1)
    pair.train()
    objective.loss(next(prepared.fit.batches(64, 50))).backward()
    assert teacher.repeat.recency.grad.abs().sum() > 0  # bidirectional: the teacher learns too
    assert student.repeat.recency.grad.abs().sum() > 0


@pytest.mark.parametrize("head", ["bonus", "mixture"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_model_with_a_repeat_head_equals_eager(fmt, head, tmp_path):
    if missing_runtime(fmt):
        pytest.skip(missing_runtime(fmt))
    config = RunConfig(compressor="ccode", compressor_options={"M": 3, "K": 16}, dim=16,
                       max_len=20, repeat_bonus=head == "bonus" or None,
                       repeat_mixture=head == "mixture" or None,
                       backbone_options={"layers": 1, "heads": 2})
    model = deployable_model(config, 2001, None)
    with torch.no_grad():
        model.repeat.recency.copy_(torch.linspace(2.0, 0.0, 20))
        model.repeat.gate.bias.fill_(0.5)
    deployed = DeployedRecommender(model, k=10, exportable=True)
    run = load(fmt, export(deployed, fmt, tmp_path / f"repeat.{fmt}", max_batch=16))
    for batch, length in ((1, 4), (5, 12)):
        item_seq, lengths = example_inputs(2001, batch=batch, length=length)
        item_seq[0, 1:3] = item_seq[0, 0]  # a repeated item
        assert_same_top_k(run, deployed, item_seq, lengths)


def test_runs_with_the_bonus_are_labelled_and_kept_out_of_the_paper_tables():
    plain, bonus = record(26.0, 27.0), record(38.0, 30.0, repeat_bonus=True)
    assert at_paper_settings(plain) and not at_paper_settings(bonus)
    assert "repeat bonus" in variant(bonus["config"])
    assert "repeat bonus" not in variant(plain["config"])


# -- the session recency baseline -------------------------------------------------------------

def brute_force_recency_rank(session: list[int], target: int, num_real_items: int) -> int:
    """Score the session's distinct items by how recently they were clicked, all else 0."""
    scores = torch.zeros(num_real_items + 1)
    for age, item in enumerate(reversed(session)):
        if item and scores[item] == 0:
            scores[item] = len(session) + 1 - age
    return int(pessimistic_ranks(scores[None], torch.tensor([target]))[0])


@pytest.mark.parametrize("seed", range(3))
def test_recency_ranks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, 8, size=rng.integers(1, 9)).tolist() for _ in range(200)]
    targets = rng.integers(1, 10, size=200)
    width = 8
    seq = np.array([r + [0] * (width - len(r)) for r in rows])
    got = recency_ranks(seq, targets, num_real_items=12)
    expected = [brute_force_recency_rank(r, int(t), 12) for r, t in zip(rows, targets)]
    assert got.tolist() == expected


def test_session_recency_ranks_see_what_the_model_sees():
    """Only the last `max_len` items count, and chunking changes nothing."""
    items = np.array([3, 1, 2, 3, 4, 5, 6, 7, 2, 5])
    examples = Examples(items, np.array([0, 0, 5]), np.array([5, 8, 10]), np.array([3, 1, 2]))
    # at max_len 4, example 0 sees [1 2 3 4]: 3 is 2nd most recent; example 1 sees [4 5 6 7]
    # -> 1 unseen, last; example 2: [5 6 7 2 5][-4:] = [6 7 2 5] -> 2 is 2nd
    assert session_recency_ranks(examples, 4, 20, chunk=2).tolist() == [2, 20, 2]


def test_the_repeat_table_sets_each_model_beside_its_bonus_and_the_recency_ranking():
    plain, bonus = record(26.0, 27.0), record(38.0, 30.0, repeat_bonus=True)
    for r, repeat_hr in ((plain, 50.0), (bonus, 80.0)):
        r["test_by_case"] = {"repeat": {"share": 45.0, "HR@10": repeat_hr},
                             "new": {"share": 55.0, "HR@10": 7.0}}
    plain["baselines"] = {"session recency": {"HR@10": 40.5, "NDCG@10": 23.7}}
    narm = record(24.0, 25.0, backbone="narm")  # no run with the bonus: no row
    legacy = record(45.0, 45.0, repeat_bonus=True, select_on="test")  # not the honest protocol
    lines = repeat_table([plain, bonus, narm, legacy]).splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines
            if line.startswith("| tmall")]
    assert rows == [
        ["tmall", "session recency (no model)", "-", "-", "40.50", "23.70", "90.00", "0.00"],
        ["tmall", "Teacher", "no", "1", "26.00", "26.00", "50.00", "7.00"],
        ["tmall", "Teacher", "bonus", "1", "38.00", "38.00", "80.00", "7.00"]]


# -- the repeat/explore mixture ----------------------------------------------------------------

@pytest.fixture
def mixture() -> SASRec:
    return sasrec_with("mixture", recencies=4)


def test_the_mixture_is_a_distribution_over_the_real_items(mixture):
    seq = padded([[5, 7, 5], [9, 1, 2, 3, 4, 6], [3]], width=8)
    with torch.no_grad():
        mixture.repeat.recency.copy_(torch.tensor([2.0, 1.0, 0.5, -1.0]))
        mixture.repeat.content.fill_(0.7)
        mixture.repeat.gate.bias.fill_(0.3)
        log_p = mixture.score(seq, (seq > 0).sum(1))
    torch.testing.assert_close(log_p[:, 1:].exp().sum(1), torch.ones(3))
    assert (log_p[:, 0] < -1e8).all()  # padding is never recommended
    # the session's items share P(repeat), the others P(explore)
    repeat = torch.sigmoid(torch.tensor(0.3))
    torch.testing.assert_close(log_p[0, [5, 7]].exp().sum(), repeat)
    torch.testing.assert_close(log_p[2, 3].exp(), repeat)


def test_the_mixture_matches_its_formula_for_one_session(mixture):
    seq = padded([[5, 7, 5]])
    with torch.no_grad():
        mixture.repeat.recency.copy_(torch.tensor([2.0, 1.0, 0.5, -1.0]))
        mixture.repeat.content.fill_(0.7)
        mixture.repeat.gate.weight.fill_(0.05)
        session = mixture.encode(seq, (seq > 0).sum(1))
        scores = mixture.compressor.score(session)[0]
        log_p = mixture.score_session(session, seq)[0]
    p_repeat = torch.sigmoid(0.05 * session.sum())
    # positions 0, 1, 2 have recency 2, 1, 0
    weights = torch.softmax(torch.stack([0.5 + 0.7 * scores[5], 1.0 + 0.7 * scores[7],
                                         2.0 + 0.7 * scores[5]]), 0)
    torch.testing.assert_close(log_p[5].exp(), p_repeat * (weights[0] + weights[2]))
    torch.testing.assert_close(log_p[7].exp(), p_repeat * weights[1])
    others = [v for v in range(1, NUM_ITEMS) if v not in (5, 7)]
    explore = torch.softmax(scores[others], 0)
    torch.testing.assert_close(log_p[others].exp(), (1 - p_repeat) * explore)


def test_a_repeat_click_trains_the_repeat_side_and_a_new_click_the_explore_side(tiny_synthetic):
    config = RunConfig(data="tiny", dim=16, repeat_mixture=True,
                       backbone_options={"dropout": 0.0})
    prepared = prepare(config, tiny_synthetic)
    batch = next(prepared.fit.batches(256, config.max_len))
    repeat = (batch.items == batch.targets[:, None]).any(1)
    assert repeat.any() and (~repeat).any()
    torch.manual_seed(0)
    model = build_model(config, tiny_synthetic.num_items)

    def step(cases: torch.Tensor) -> torch.Tensor:
        model.zero_grad()
        sub = type(batch)(batch.items[cases], batch.lengths[cases], batch.targets[cases])
        training_loss(model, sub).backward()
        return sub.items

    items = step(repeat)
    assert model.repeat.recency.grad.abs().sum() > 0
    # no explore score learns from a repeat click: the rows of items outside its sessions
    # (which reach the loss through the explore softmax only) get no gradient
    outside = torch.ones(tiny_synthetic.num_items, dtype=torch.bool)
    outside[items.unique()] = False
    assert model.compressor.table.grad[outside].abs().max() < 1e-6
    step(~repeat)
    assert model.compressor.table.grad.abs().sum() > 0
    # (analytically zero: the loss's normaliser is 1 whatever the repeat side; rounding is not)
    assert model.repeat.recency.grad is None or model.repeat.recency.grad.abs().max() < 1e-6


def test_a_run_takes_one_repeat_head_only():
    with pytest.raises(ConfigError, match="choose one"):
        RunConfig(repeat_bonus=True, repeat_mixture=True)
    assert RunConfig(repeat_mixture=True).repeat_head == "mixture"
    assert "repeat mixture" in variant(record(1.0, 1.0, repeat_mixture=True)["config"])


def test_a_model_with_a_head_is_set_beside_its_own_settings_without_it():
    frozen = {"M": 4, "K": 32, "freeze_codes_after": 0}
    bonus = student(40.0, 30.0, compressor_options=frozen, repeat_bonus=True)
    same = student(17.5, 22.0, compressor_options=frozen)
    other = student(18.0, 23.0, compressor_options={"M": 4, "K": 32})  # better validation
    cells = repeat_cells([bonus, same, other])
    assert cells["Stu-base", "tmall", "bonus"] == [bonus]
    assert cells["Stu-base", "tmall", "no"] == [same]


def dense_mixture(head, scores, item_seq, session):
    """The mixture written plainly over dense [B, num_items] masks: the reference."""
    real = item_seq > 0
    lengths = real.sum(1, keepdim=True)
    recency = (lengths - 1 - torch.arange(item_seq.shape[1])).clamp(0, head.recency.numel() - 1)
    logits = head.recency[recency] + head.content * scores.gather(1, item_seq)
    position_p = torch.softmax(logits.masked_fill(~real, -1e9), 1) * real
    repeat_p = torch.zeros_like(scores).scatter_add(1, item_seq, position_p)
    in_session = torch.zeros_like(scores, dtype=torch.bool).scatter(1, item_seq, real)
    padding = torch.arange(scores.shape[1]) == 0
    explore = scores.masked_fill(in_session | padding, -1e9).log_softmax(1)
    gate = head.gate(session)
    log_p = torch.where(in_session, torch.nn.functional.logsigmoid(gate) + torch.log(repeat_p + 1e-30),
                        torch.nn.functional.logsigmoid(-gate) + explore)
    return log_p.masked_fill(padding, -1e9)


def test_the_mixture_and_its_gradients_match_the_dense_reference(mixture):
    """Repeated items, a full-width session and padded ones: values and every gradient."""
    seq = padded([[5, 7, 5, 5, 2, 7], [9, 1], [3, 3]], width=6)
    targets = torch.tensor([7, 4, 3])
    with torch.no_grad():
        mixture.repeat.recency.copy_(torch.tensor([2.0, 1.0, 0.5, -1.0]))
        mixture.repeat.content.fill_(0.7)
        mixture.repeat.gate.weight.normal_()
    results = []
    for score in (mixture.score_session, lambda s, q: dense_mixture(
            mixture.repeat, mixture.compressor.score(s), q, s)):
        mixture.zero_grad()
        session = mixture.encode(seq, (seq > 0).sum(1))
        log_p = score(session, seq)
        torch.nn.functional.cross_entropy(log_p[:, 1:], targets - 1).backward()
        results.append((log_p.detach(), [p.grad.clone() for p in mixture.parameters()]))
    (fast, fast_grads), (dense, dense_grads) = results
    torch.testing.assert_close(fast[:, 1:], dense[:, 1:])
    for got, expected in zip(fast_grads, dense_grads):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)


def test_the_mixture_scores_alike_with_and_without_autograd(mixture):
    """Inference writes in place (two passes fewer); it must equal the training path to the bit
    and leave the compressor's scores as they were."""
    seq = padded([[5, 7, 5, 5, 2, 7], [9, 1], [3, 3]], width=6)
    with torch.no_grad():
        mixture.repeat.recency.copy_(torch.tensor([2.0, 1.0, 0.5, -1.0]))
        mixture.repeat.content.fill_(0.7)
        mixture.repeat.gate.weight.normal_()
    session = mixture.encode(seq, (seq > 0).sum(1)).detach()
    scores = mixture.compressor.score(session).detach()
    with torch.enable_grad():
        trained = mixture.repeat(scores, seq, session)
    before = scores.clone()
    with torch.no_grad():
        inferred = mixture.repeat(scores, seq, session)
    assert torch.equal(inferred, trained.detach())
    assert torch.equal(scores, before)


@pytest.mark.parametrize("teacher_head, student_head", [("mixture", None), (None, "mixture"),
                                                        ("bonus", "mixture"),
                                                        ("mixture", "mixture")])
def test_a_student_takes_the_teachers_encoder_and_its_repeat_head_only_if_the_same(
        teacher_head, student_head, tmp_path):
    def model(head, compressor="full", options=None):
        config = RunConfig(dim=16, compressor=compressor, compressor_options=options or {},
                           repeat_bonus=head == "bonus" or None,
                           repeat_mixture=head == "mixture" or None)
        return build_model(config, 50)

    teacher_model = model(teacher_head)
    with torch.no_grad():
        for p in teacher_model.parameters():
            p.add_(1.0)  # nothing at its initial value
    teacher = Teacher({"config": {"backbone": "sasrec"}}, tmp_path / "t.json",
                      teacher_model.state_dict())
    student = model(student_head, "ccode", {"M": 2, "K": 8})
    fresh_head = student.repeat.state_dict() if student.repeat is not None else None
    assert copy_encoder(student, "sasrec", teacher, required=True)
    torch.testing.assert_close(student.blocks.state_dict(), teacher_model.blocks.state_dict())
    if student_head is not None and teacher_head == student_head:
        torch.testing.assert_close(student.repeat.state_dict(), teacher_model.repeat.state_dict())
    elif student_head is not None:
        torch.testing.assert_close(student.repeat.state_dict(), fresh_head)
