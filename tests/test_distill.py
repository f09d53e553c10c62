"""The distillation harness (Section 5): its losses against the paper's formulas, the teacher's
two modes, the ablation switches, resume, and a distilled run end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from ecbench.bench.training.config import RunConfig
from ecbench.bench.training.distill import (DistillationObjective, DistillationPair, DistillConfig,
                                            info_nce, recombine, scheduled_eta, soft_target_loss)
from ecbench.bench.training.train import Trainer, build_model, prepare
from helpers import records_under, run_cli, sessions_as_lists, write_dataset

DIM = 16


def test_recombination_swaps_the_cold_halves():
    # three sessions: mixed, all hot, all cold; views are (whole, hot, cold) readouts
    def views(offset: float):
        whole = torch.full((3, 2), offset + 0.0)
        hot = torch.tensor([[offset + 1] * 2, [offset + 1] * 2, [0.0, 0.0]])
        cold = torch.tensor([[offset + 2] * 2, [0.0, 0.0], [offset + 2] * 2])
        return whole, hot, cold

    has_hot = torch.tensor([True, True, False])
    has_cold = torch.tensor([True, False, True])
    z_tea, z_stu = recombine(views(10.0), views(20.0), has_hot, has_cold)
    # mixed: z_tea = [hot_tea, cold_stu], z_stu = [hot_stu, cold_tea]   (Eq. 19)
    assert z_tea[0].tolist() == [11, 11, 22, 22] and z_stu[0].tolist() == [21, 21, 12, 12]
    # all hot: the missing cold half is the whole readout, so whole readouts are swapped
    assert z_tea[1].tolist() == [11, 11, 20, 20] and z_stu[1].tolist() == [21, 21, 10, 10]
    # all cold: likewise for the missing hot half
    assert z_tea[2].tolist() == [10, 10, 22, 22] and z_stu[2].tolist() == [20, 20, 12, 12]


def test_info_nce_is_eq20_summed_over_the_batch_or_averaged():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    tau = 0.2
    psi = torch.exp(F.cosine_similarity(a.unsqueeze(1), b.unsqueeze(0), dim=2) / tau)
    per_session = -torch.log(psi.diag() / psi.sum(1))
    torch.testing.assert_close(info_nce(a, b, tau), per_session.sum())  # Eq. 20 as written
    torch.testing.assert_close(info_nce(a, b, tau, "mean"), per_session.mean())
    # views that agree are easy to tell apart from the other sessions
    assert info_nce(a, a, tau) < info_nce(a, b, tau)


def test_soft_target_loss_is_kl_from_teacher_to_student_summed_or_averaged():
    g = torch.Generator().manual_seed(1)
    t, s = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    p, q = t.softmax(1), s.softmax(1)
    per_session = (p * (p / q).log()).sum(1)  # Eq. 22
    log_t, log_s = t.log_softmax(1), s.log_softmax(1)
    torch.testing.assert_close(soft_target_loss(log_t, log_s), per_session.sum())
    torch.testing.assert_close(soft_target_loss(log_t, log_s, "mean"), per_session.mean())
    assert soft_target_loss(log_t, log_t).abs() < 1e-5


@pytest.mark.parametrize("schedule, first, last", [("none", 0.8, 0.8), ("linear", 0.6, 0.0),
                                                   ("cosine", 0.8 * (1 + math.cos(math.pi / 4)) / 2,
                                                    0.0)])
def test_eta_schedules_anneal_to_zero_at_the_last_epoch(schedule, first, last):
    assert scheduled_eta(0.8, schedule, 1, 4) == pytest.approx(first)
    assert scheduled_eta(0.8, schedule, 4, 4) == pytest.approx(last, abs=1e-12)


# -- the objective on a tiny dataset ----------------------------------------------------------

def _config(**distill) -> RunConfig:
    return RunConfig(data="tiny", dim=DIM, epochs=2, patience=5, batch_size=128,
                     compressor="ccode", compressor_options={"M": 2, "K": 32},
                     backbone_options={"dropout": 0.2}, distill=distill or None)


def _pair(data, config: DistillConfig) -> tuple[DistillationPair, torch.Tensor]:
    torch.manual_seed(0)
    teacher = build_model(RunConfig(dim=DIM, backbone_options={"dropout": 0.2}), data.num_items)
    student = build_model(_config(), data.num_items)
    with torch.no_grad():
        student.compressor.init_from_table(teacher.compressor.weight())
    return DistillationPair(teacher, student, config), teacher.compressor.weight().detach().clone()


def _one_step(pair: DistillationPair, data, epochs: int = 2) -> dict:
    prepared = prepare(_config(), data)
    objective = DistillationObjective(pair, torch.from_numpy(prepared.hot_items), epochs)
    objective.start_epoch(1)
    pair.train()
    batch = next(prepared.fit.batches(128, 50))
    loss = objective.loss(batch)
    trainable = [p for p in pair.parameters() if p.requires_grad]
    torch.optim.Adam(trainable, lr=1e-2).zero_grad()
    loss.backward()
    return objective.end_epoch()["loss_terms"]


def test_bidirectional_distillation_trains_the_teacher(tiny_synthetic):
    pair, _ = _pair(tiny_synthetic, DistillConfig())
    terms = _one_step(pair, tiny_synthetic)
    assert set(terms) == {"rec_student", "mse", "rec_teacher", "soft", "contrastive"}
    assert pair.teacher.compressor.table.grad is not None
    assert pair.teacher.readout.f.weight.grad.abs().sum() > 0
    assert pair.project_teacher.weight.grad.abs().sum() > 0
    assert pair.student.compressor.codebooks.grad.abs().sum() > 0
    assert pair.student.compressor.encoder.hidden.weight.grad.abs().sum() > 0


def test_a_frozen_teacher_gets_no_gradient_and_stays_in_eval_mode(tiny_synthetic):
    pair, _ = _pair(tiny_synthetic, DistillConfig(bidirectional=False))
    terms = _one_step(pair, tiny_synthetic)
    assert "rec_teacher" not in terms and {"soft", "contrastive"} <= set(terms)
    assert all(p.grad is None for p in pair.teacher.parameters())
    assert not pair.teacher.training and pair.student.training


@pytest.mark.parametrize("switch, dropped", [({"contrastive": False}, "contrastive"),
                                             ({"soft": False}, "soft")])
def test_ablation_switches_drop_their_loss(tiny_synthetic, switch, dropped):
    pair, _ = _pair(tiny_synthetic, DistillConfig(**switch))
    assert dropped not in _one_step(pair, tiny_synthetic)


def test_the_eta_schedule_sets_the_students_mixup(tiny_synthetic):
    pair, _ = _pair(tiny_synthetic, DistillConfig(eta=0.8, eta_schedule="linear"))
    objective = DistillationObjective(pair, torch.zeros(tiny_synthetic.num_items, dtype=torch.bool),
                                      epochs=4)
    assert objective.start_epoch(2) == {"eta": pytest.approx(0.4)}
    assert pair.student.compressor.config.eta == pytest.approx(0.4)
    assert objective.settled_epoch == 4  # patience waits for the mixup to reach 0
    constant, _ = _pair(tiny_synthetic, DistillConfig(eta=0.8))
    hot = torch.zeros(tiny_synthetic.num_items, dtype=torch.bool)
    assert DistillationObjective(constant, hot, epochs=4).settled_epoch == 0
    no_mixup, _ = _pair(tiny_synthetic, DistillConfig(eta=0.0, eta_schedule="linear"))
    assert DistillationObjective(no_mixup, hot, epochs=4).settled_epoch == 0


def test_a_killed_distillation_resumes_to_the_same_result(tiny_synthetic, tmp_path):
    config = _config(**{"eta": 0.5, "eta_schedule": "linear"})
    prepared = prepare(config, tiny_synthetic)
    hot = torch.from_numpy(prepared.hot_items)

    def trainer(checkpoint, log=lambda m: None):
        pair, _ = _pair(tiny_synthetic, DistillConfig(eta=0.5, eta_schedule="linear"))
        objective = DistillationObjective(pair, hot, config.epochs)
        return Trainer(config, prepared, pair.student, checkpoint, log=log, objective=objective)

    straight = trainer(tmp_path / "a.pt")
    straight.fit()

    def stop_at_second(message):
        if message.startswith("epoch 2:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "b.pt", log=stop_at_second).fit()
    torch.manual_seed(99)  # a new process
    resumed = trainer(tmp_path / "b.pt")
    assert resumed.load_checkpoint() and resumed.state.epoch == 1
    resumed.fit()
    assert [e["train_loss"] for e in resumed.state.history] == \
           [e["train_loss"] for e in straight.state.history]
    assert [e["teacher_validation"] for e in resumed.state.history] == \
           [e["teacher_validation"] for e in straight.state.history]
    assert [e["eta"] for e in straight.state.history] == [0.25, 0.0]


# -- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_synthetic):
    folder = tmp_path_factory.mktemp("data") / "tiny"
    test = tiny_synthetic
    return write_dataset(folder, sessions_as_lists(test.train),
                         (sessions_as_lists(test.test_prefixes), test.test_labels.tolist()))


STUDENT = ["--compressor", "ccode", "--M", "2", "--K", "32", "--dim", str(DIM), "--epochs", "1",
           "--threads", "1", "--no-progress"]


@pytest.mark.slow
def test_a_distilled_run_pretrains_then_distils_and_records_both_models(tiny_folder, tmp_path):
    where = ["--data", str(tiny_folder), "--results", str(tmp_path / "r"),
             "--workdir", str(tmp_path / "w")]
    proc = run_cli(["run", *STUDENT, *where, "--kd", "full", "--eta-schedule", "linear"],
                   cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "training (or reusing) the pretrained student" in proc.stderr
    records = [json.loads(p.read_text()) for p in records_under(tmp_path / "r")]
    by_kind = {(r["config"]["compressor"], r["config"]["distill"] is not None): r for r in records}
    assert set(by_kind) == {("full", False), ("ccode", False), ("ccode", True)}
    distilled, pretrained = by_kind[("ccode", True)], by_kind[("ccode", False)]
    assert distilled["pretrained"]["key"] == pretrained["key"]
    assert distilled["teacher"]["key"] == by_kind[("full", False)]["key"]
    assert distilled["config"]["distill"]["bidirectional"] is True
    teacher_after = distilled["beside"]["teacher"]
    assert set(teacher_after["test"]) == set(distilled["test"])
    assert distilled["history"][0]["eta"] == 0.0  # linear schedule over one epoch
    assert "contrastive" in distilled["history"][0]["loss_terms"]
    # the student is recorded in its deployed form: codes and codebooks only
    assert [t["name"] for t in distilled["size"]["item_storage"]["tensors"]] == ["codes",
                                                                                "codebooks"]
    # an ablation reuses the teacher and the pretrained student
    proc = run_cli(["run", *STUDENT, *where, "--kd", "full", "--no-bidirectional"],
                   cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("reusing the record of an identical run") == 2  # teacher, student
    assert "student initialised" not in proc.stderr  # no second pretraining
    assert len(records_under(tmp_path / "r")) == 4
    # a longer distillation than --epochs still reuses both, and anneals eta over its own epochs
    proc = run_cli(["run", *STUDENT, *where, "--kd", "full", "--kd-epochs", "2",
                    "--eta-schedule", "linear"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("reusing the record of an identical run") == 2
    longer = next(r for r in map(json.loads, (p.read_text() for p in records_under(tmp_path / "r")))
                  if r["config"]["distill"] and r["config"]["distill"]["epochs"] == 2)
    assert [e["eta"] for e in longer["history"]] == pytest.approx([0.4, 0.0])


@pytest.mark.parametrize("flag", [["--no-soft"], ["--beta", "0.1"], ["--eta-schedule", "linear"],
                                  ["--pretrained", "abc"], ["--kd-epochs", "3"],
                                  ["--teacher-table", "copy"], ["--kd-reduction", "mean"]])
def test_distillation_options_need_kd(flag, tmp_path):
    proc = run_cli(["run", *flag, "--epochs", "1"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "needs --kd full" in proc.stderr.strip().splitlines()[-1]
    assert not records_under(tmp_path / "results")


def test_distillation_with_an_impossible_eta_is_refused(tmp_path):
    proc = run_cli(["run", "--kd", "full", "--kd-eta", "1.5"], cwd=tmp_path)
    assert proc.returncode != 0 and "--kd-eta must be in [0, 1)" in proc.stderr


def _train_steps(pair: DistillationPair, data, steps: int, lr: float = 5e-2):
    """`steps` optimiser steps of Eq. 27 on the first batches; returns the objective."""
    prepared = prepare(_config(), data)
    objective = DistillationObjective(pair, torch.from_numpy(prepared.hot_items), 2)
    objective.start_epoch(1)
    pair.train()
    optimizer = torch.optim.Adam([p for p in pair.parameters() if p.requires_grad], lr=lr)
    for _, batch in zip(range(steps), prepared.fit.batches(128, 50)):
        loss = objective.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return objective, next(prepared.fit.batches(128, 50))


def test_the_student_mixes_in_and_reconstructs_the_live_teacher_table(tiny_synthetic):
    """Algorithm 1: the mixup (Eq. 16), the MSE target (Eq. 12) and the code encoder's input
    read the teacher's current table at every step, not the copy taken before pretraining."""
    pair, copied = _pair(tiny_synthetic, DistillConfig())
    objective, batch = _train_steps(pair, tiny_synthetic, steps=5)
    live = pair.teacher.compressor.weight().detach().clone()
    assert (live - copied).norm() > 0.05 * copied.norm()  # the teacher has moved
    objective.loss(batch)  # the next step reads the table as it is now
    student = pair.student.compressor
    torch.testing.assert_close(student.teacher[1:], live[1:])
    assert student.teacher[0].abs().sum() == 0
    standardised = (live[1:] - live[1:].mean(0)) / live[1:].std(0)
    torch.testing.assert_close(student.teacher_input[1:], standardised)


def test_with_the_teacher_table_copied_the_student_keeps_the_pretraining_copy(tiny_synthetic):
    pair, copied = _pair(tiny_synthetic, DistillConfig(teacher_table="copy"))
    objective, batch = _train_steps(pair, tiny_synthetic, steps=5)
    objective.loss(batch)
    torch.testing.assert_close(pair.student.compressor.teacher[1:], copied[1:])
    assert (pair.teacher.compressor.weight().detach() - copied).norm() > 0


def test_the_released_code_loop_leaves_the_teacher_and_projections_as_they_were(tiny_synthetic):
    """Legacy: the released code never steps the teacher's optimiser, keeps its dropout on
    while it distils, and never trains W_t, W_s (its optimiser predates them)."""
    pair, _ = _pair(tiny_synthetic, DistillConfig(released_code=True))
    before = {name: p.detach().clone() for name, p in pair.named_parameters()}
    objective, _ = _train_steps(pair, tiny_synthetic, steps=3)
    assert pair.teacher.training  # dropout on, as the released loop runs it
    moved = {name for name, p in pair.named_parameters() if not torch.equal(p, before[name])}
    assert moved and all(name.startswith("student.") for name in moved)
    assert "rec_teacher" not in objective.end_epoch()["loss_terms"]
