"""Bidirectional self-supervised knowledge distillation (the paper's Section 5, Eq. 18-27).

A teacher (uncompressed table) and a student (compressed table) on the same kind of backbone
are trained together on

    L = L_rec(student) + L_mse + beta * L_con + gamma * L_soft  [+ L_rec(teacher)]   (Eq. 27)

- embedding recombination (Eq. 18-19): each model reads every session out three ways in one
  pass (whole, hot items only, cold items only); the cold halves are swapped between the models;
- contrastive distillation (Eq. 20): InfoNCE between the two recombined views of a session,
  the batch's other sessions as negatives, learned projections W_t and W_s, cosine / tau;
- soft targets (Eq. 21-22): KL(teacher || student) over the full catalogue;
- bidirectional (Section 5.4): the teacher keeps learning, from its own recommendation loss and
  from the student through both distillation losses; without it the teacher is frozen.

The student's embedding mixup (Eq. 16) uses its own `eta`, which a schedule may anneal to 0, so
that the deployed student (compressed table alone) is what training converges to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ecbench.backbones import Backbone
from ecbench.bench.data.batching import Batch, Examples
from ecbench.bench.device import autocast
from ecbench.bench.training.config import DISTILL_WEIGHTS
from ecbench.bench.training.train import evaluate as evaluate_model

EtaSchedule = Literal["none", "linear", "cosine"]
TeacherTable = Literal["live", "copy"]
Reduction = Literal["sum", "mean"]


@dataclass
class DistillConfig:
    """Switches and weights of Eq. 27; the defaults are the paper's (Section 6.6) for Tmall."""

    contrastive: bool = True  # False: the paper's Stu-w/o-c
    soft: bool = True  # False: Stu-w/o-s
    bidirectional: bool = True  # False: the teacher is frozen (Stu-w/o-b; OD-Rec's framework)
    beta: float = DISTILL_WEIGHTS["beta"]  # weight of L_con (0.5 on RetailRocket)
    gamma: float = DISTILL_WEIGHTS["gamma"]  # weight of L_soft
    # the student's mixup weight during distillation (0.7 on RetailRocket)
    eta: float = DISTILL_WEIGHTS["eta"]
    eta_schedule: EtaSchedule = "none"  # anneal eta to 0 over the epochs, or keep it
    temperature: float = 0.2  # tau of Eq. 20
    # the distillation's own maximum epochs (and eta schedule length); None: the run's --epochs.
    # Apart from --epochs, so that the teacher and the pretrained student it derives stay the
    # recorded runs of the same settings.
    epochs: int | None = None
    # Which teacher table the student's mixup, reconstruction target and code encoder read:
    # the teacher's current one each step (Algorithm 1, the paper's released code), or the copy
    # made before pretraining (how this suite distilled before; a variant of ours).
    teacher_table: TeacherTable = "live"
    # How L_con and L_soft reduce over the batch: summed (Eq. 20 and the released code, which
    # also sums L_soft over the catalogue), so that beta and gamma weigh them at the paper's
    # scale beside the batch-mean L_rec; or averaged (ours before, about 1/batch of that).
    reduction: Reduction = "sum"
    # Legacy: distil as the paper's released code does, whatever its text says: the teacher's
    # optimiser never steps (its weights stay: in effect Stu-w/o-b), the teacher runs in
    # training mode (dropout on) while it distils, and the projections W_t, W_s stay at their
    # random initialisation (its student optimiser was built before they were created).
    released_code: bool = False

    def __post_init__(self) -> None:
        if self.beta < 0 or self.gamma < 0:
            raise ValueError("--beta and --gamma must be non-negative")
        if not 0.0 <= self.eta < 1.0:
            raise ValueError(f"--kd-eta must be in [0, 1), got {self.eta}")
        if self.eta_schedule not in ("none", "linear", "cosine"):
            raise ValueError(f"--eta-schedule must be none, linear or cosine, "
                             f"got {self.eta_schedule!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--kd-epochs must be at least 1, got {self.epochs}")
        if self.teacher_table not in ("live", "copy"):
            raise ValueError(f"--teacher-table must be live or copy, got {self.teacher_table!r}")
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"--kd-reduction must be sum or mean, got {self.reduction!r}")
        if self.temperature <= 0:
            raise ValueError(f"the contrastive temperature must be positive, got {self.temperature}")


def scheduled_eta(eta: float, schedule: EtaSchedule, epoch: int, epochs: int) -> float:
    """The mixup weight for `epoch` (1-based) of `epochs`: constant, or annealed to 0 at the end."""
    progress = min(epoch / epochs, 1.0)
    if schedule == "linear":
        return eta * (1.0 - progress)
    if schedule == "cosine":
        return eta * 0.5 * (1.0 + math.cos(math.pi * progress))
    return eta


def recombine(teacher_views: tuple[torch.Tensor, ...], student_views: tuple[torch.Tensor, ...],
              has_hot: torch.Tensor, has_cold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_tea = [hot_tea, cold_stu], z_stu = [hot_stu, cold_tea]   (Eq. 19).

    A session with no hot (cold) item has no hot (cold) readout; its whole-session readout
    stands in, so an all-hot or all-cold session swaps whole readouts.
    """
    def halves(views: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        whole, hot, cold = views
        return (torch.where(has_hot.unsqueeze(1), hot, whole),
                torch.where(has_cold.unsqueeze(1), cold, whole))

    hot_t, cold_t = halves(teacher_views)
    hot_s, cold_s = halves(student_views)
    return torch.cat([hot_t, cold_s], 1), torch.cat([hot_s, cold_t], 1)


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float,
             reduction: Reduction = "sum") -> torch.Tensor:
    """Eq. 20, summed over the batch (as the paper writes it) or averaged: row i of `positives`
    is the positive of anchor i, the other rows its negatives; similarity is the cosine over
    `temperature`."""
    logits = F.normalize(anchors, dim=1) @ F.normalize(positives, dim=1).t() / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device),
                           reduction=reduction)


def soft_target_loss(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor,
                     reduction: Reduction = "sum") -> torch.Tensor:
    """KL(prob_tea || prob_stu) over the real items (Eq. 21-22), summed over the batch (the
    released code) or averaged; from log-probabilities, which the recommendation losses share."""
    return F.kl_div(student_log_probs, teacher_log_probs, log_target=True,
                    reduction="sum" if reduction == "sum" else "batchmean")


class DistillationPair(nn.Module):
    """The teacher, the student and the projections W_t, W_s of Eq. 20: what is trained and
    checkpointed together."""

    def __init__(self, teacher: Backbone, student: Backbone, config: DistillConfig) -> None:
        super().__init__()
        if teacher.dim != student.dim:
            raise ValueError(f"teacher dim {teacher.dim} != student dim {student.dim}")
        self.teacher, self.student, self.config = teacher, student, config
        dim = student.dim
        self.project_teacher = nn.Linear(2 * dim, dim, bias=False)  # W_t
        self.project_student = nn.Linear(2 * dim, dim, bias=False)  # W_s
        for layer in (self.project_teacher, self.project_student):
            nn.init.uniform_(layer.weight, -0.1, 0.1)  # the paper's initialisation
        if not config.bidirectional or config.released_code:
            self.teacher.requires_grad_(False)
        if config.released_code:
            self.project_teacher.requires_grad_(False)
            self.project_student.requires_grad_(False)

    @property
    def teacher_learns(self) -> bool:
        return self.config.bidirectional and not self.config.released_code

    def train(self, mode: bool = True) -> "DistillationPair":
        super().train(mode)
        if not self.config.bidirectional and not self.config.released_code:
            self.teacher.eval()  # a frozen teacher gives its deterministic predictions
        return self


class DistillationObjective:
    """Eq. 27 over a batch, the eta schedule, and validation of both models.

    The student is what is selected and deployed; the teacher is evaluated beside it.
    """

    def __init__(self, pair: DistillationPair, hot_items: torch.Tensor, epochs: int) -> None:
        self.module = pair
        self.hot_items = hot_items
        self.epochs = epochs
        self.mixup = getattr(pair.student.compressor, "set_mixup", None)
        # an annealed mixup reaches the deployed student (no teacher table) only at the end
        annealed = (self.mixup is not None and pair.config.eta > 0
                    and pair.config.eta_schedule != "none")
        self.settled_epoch = epochs if annealed else 0
        self._term_sums: dict[str, torch.Tensor] = {}  # on the device: read once an epoch
        self._steps = 0

    def to(self, device: torch.device) -> None:
        """Keep the hot-item mask where the batches are."""
        self.hot_items = self.hot_items.to(device)

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.module.config
        self._term_sums, self._steps = {}, 0
        info = self.module.student.compressor.start_epoch(epoch)
        if self.mixup is None:
            return info
        eta = scheduled_eta(cfg.eta, cfg.eta_schedule, epoch, self.epochs)
        self.mixup(eta)
        return {**info, "eta": eta}

    def end_epoch(self) -> dict[str, Any]:
        """The mean of each term of Eq. 27 over the epoch's steps (weights applied)."""
        return {"loss_terms": {k: v.item() / max(self._steps, 1)
                               for k, v in self._term_sums.items()}}

    def loss(self, batch: Batch, precision: str = "fp32") -> torch.Tensor:
        pair, cfg = self.module, self.module.config
        teacher, student = pair.teacher, pair.student
        targets = batch.targets - 1
        with autocast(batch.items.device, precision), \
                teacher.compressor.shared_weight(), student.compressor.shared_weight():
            if cfg.teacher_table == "live":
                student.compressor.follow_teacher_table(
                    teacher.compressor.current_weight().detach().float())
            with torch.set_grad_enabled(pair.teacher_learns and torch.is_grad_enabled()):
                t_views = teacher.encode_views(batch.items, batch.lengths, self.hot_items)
                t_scores = teacher.score_session(t_views[0], batch.items)
            s_views = student.encode_views(batch.items, batch.lengths, self.hot_items)
            s_scores = student.score_session(s_views[0], batch.items)
        # one log-softmax over the real items per model serves L_rec and L_soft
        t_log_probs = F.log_softmax(t_scores.float()[:, 1:], 1)
        s_log_probs = F.log_softmax(s_scores.float()[:, 1:], 1)
        terms: dict[str, torch.Tensor] = {"rec_student": F.nll_loss(s_log_probs, targets)}
        extra = student.compressor.extra_loss()
        if extra is not None:
            terms["mse"] = extra
        if pair.teacher_learns:
            terms["rec_teacher"] = F.nll_loss(t_log_probs, targets)
        if cfg.soft and cfg.gamma > 0:
            terms["soft"] = cfg.gamma * soft_target_loss(t_log_probs, s_log_probs, cfg.reduction)
        if cfg.contrastive and cfg.beta > 0:
            in_session = batch.items > 0
            hot = self.hot_items[batch.items] & in_session
            z_t, z_s = recombine(t_views, s_views, hot.any(1), (in_session & ~hot).any(1))
            terms["contrastive"] = cfg.beta * info_nce(
                pair.project_teacher(z_t.float()), pair.project_student(z_s.float()),
                cfg.temperature, cfg.reduction)
        for name, value in terms.items():
            kept = self._term_sums.get(name)
            self._term_sums[name] = value.detach() if kept is None else kept + value.detach()
        self._steps += 1
        return sum(terms.values())

    def evaluate(self, examples: Examples, max_len: int
                 ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The student's metrics (what selection watches) and, beside them, the teacher's."""
        pair = self.module
        return (evaluate_model(pair.student, examples, max_len),
                {"teacher": evaluate_model(pair.teacher, examples, max_len)})
