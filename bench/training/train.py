"""Training with full-softmax cross-entropy, selection on validation, checkpoints and resume."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from ecbench import backbones
from ecbench import compressors
from ecbench.backbones import Backbone
from ecbench.backbones.dropout import set_dropout
from ecbench.bench.data.batching import Batch, Examples
from ecbench.bench.training.config import RunConfig, build_part_config, canonical_options
from ecbench.bench.errors import ConfigError, DataError, EcbenchError, TrainingDiverged
from ecbench.bench.data.loaders import load_standard, resolve_dataset_path
from ecbench.bench.evaluation.metrics import (metrics_from_ranks, pessimistic_ranks,
                                              tied_with_another)
from ecbench.bench.cpu import available_memory, large_blocks_mapped
from ecbench.bench.device import autocast, rng_state, set_rng_state, synchronize
from ecbench.bench.records import atomic_write, load_weights
from ecbench.bench.data.sessions import (SessionDataset, Split, hot_items, item_popularity,
                                         split_validation)
from ecbench.bench.data.synthetic import synthetic_dataset

EVAL_BATCH_SIZE = 500
EVAL_SCORE_BYTES = 32 * 2**20
# On a GPU, evaluation scores many more cases at once: its memory is large and each batch costs
# kernel launches, not bandwidth.
CUDA_EVAL_BATCH_SIZE = 8192
CUDA_EVAL_SCORE_BYTES = 2 * 2**30
# On a GPU the training loss is read back (a host synchronisation) only every this many steps.
CUDA_LOSS_CHECK_STEPS = 200


def load_dataset(data: str, data_root: str | None = None) -> SessionDataset:
    if data == "synthetic":
        return synthetic_dataset()
    path = resolve_dataset_path(data, data_root)
    return load_standard(path, name=data if "/" not in data else path.name)


@dataclass
class Prepared:
    """A dataset split and indexed for training and evaluation."""

    data: SessionDataset
    split: Split
    fit: Examples
    validation: Examples
    test: Examples
    hot_items: np.ndarray
    popularity: np.ndarray


def prepare(config: RunConfig, data: SessionDataset, refit: bool = False) -> Prepared:
    """Split and index `data`; with `refit`, train on every training session (validation kept
    only for the record: the epoch count was already chosen on it). The legacy protocol
    (`select_on="test"`) also trains on every training session, as the paper did: it holds
    nothing out, and its validation split, then part of training, is never evaluated."""
    split = split_validation(data.train, config.val_fraction, config.val_split, config.seed)
    if refit or config.select_on == "test":
        split = dataclasses.replace(split, fit=data.train)
    fit = Examples.from_sessions(split.fit)
    validation = Examples.from_sessions(split.validation)
    if len(fit) == 0 or len(validation) == 0:
        raise DataError(f"{data.name}: too few sessions of length >= 2 to train and validate")
    return Prepared(
        data=data, split=split, fit=fit, validation=validation,
        test=Examples.from_prefixes(data.test_prefixes, data.test_labels),
        hot_items=hot_items(split.fit, data.num_items, config.hot_fraction),
        popularity=item_popularity(split.fit, data.num_items))


def apply_budget(config: RunConfig, num_items: int) -> RunConfig:
    """With `--ratio`, let the compressor choose the size options that meet it."""
    if config.ratio is None:
        return config
    entry = compressors.registry.get(config.compressor)
    if entry.budget is None:
        raise ConfigError(f"compressor {config.compressor} cannot meet a --ratio budget")
    part = build_part_config(entry.config, config.compressor_options,
                             f"compressor {config.compressor}")
    try:
        solved = entry.budget(part, num_items, config.dim, config.ratio)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    options = canonical_options(entry.config, dataclasses.asdict(solved))
    return dataclasses.replace(config, compressor_options=options)


def estimated_memory(config: RunConfig, num_items: int) -> int:
    """A rough upper estimate of a run's bytes that grow with the catalogue: a dense item table
    with its gradient and Adam's two moments (a compressed table stores less, but the full
    softmax rebuilds it), and a training batch's [B, num_items] scores, their softmax and
    gradient, with room for the evaluation chunk."""
    table = 4 * num_items * config.dim * 5
    scores = 4 * num_items * config.batch_size * 4
    return table + scores + 2 * EVAL_SCORE_BYTES


def check_memory(config: RunConfig, num_items: int, name: str,
                 device: torch.device = torch.device("cpu")) -> None:
    """Refuse, before anything is allocated, a run the free memory of the machine (or of the
    GPU it runs on) cannot hold."""
    need = estimated_memory(config, num_items)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    where = f"free on {device}" if device.type == "cuda" else "free"
    if free is not None and need > 0.9 * free:
        raise DataError(f"{name}: a run over {num_items - 1:,} items at dim {config.dim} and "
                        f"batch {config.batch_size} needs about {need / 2**30:.1f} GiB, and "
                        f"{free / 2**30:.1f} GiB is {where}; nothing was run")


def build_model(config: RunConfig, num_items: int) -> Backbone:
    comp_entry = compressors.registry.get(config.compressor)
    back_entry = backbones.registry.get(config.backbone)
    comp_cfg = build_part_config(comp_entry.config, config.compressor_options,
                                 f"compressor {config.compressor}")
    back_cfg = build_part_config(back_entry.config, config.backbone_options,
                                 f"backbone {config.backbone}")
    try:
        compressor = comp_entry.builder(comp_cfg, num_items=num_items, dim=config.dim)
        model = back_entry.builder(back_cfg, compressor=compressor, max_len=config.max_len)
    except ValueError as exc:
        raise ConfigError(f"{config.backbone}/{config.compressor}: {exc}") from None
    if config.repeat_head is not None:
        model.enable_repeat(config.repeat_head, config.max_len)
    return model


def eval_batch_size(num_items: int, device: torch.device | None = None) -> int:
    """Test cases scored at once: as many as keep a [B, num_items] score matrix within
    `EVAL_SCORE_BYTES` (its comparisons and masks come on top), at least 16, at most 500, so
    evaluation memory is bounded by the catalogue, not by the test set. On CUDA the bounds are
    `CUDA_EVAL_SCORE_BYTES` and `CUDA_EVAL_BATCH_SIZE`."""
    on_cuda = device is not None and device.type == "cuda"
    budget = CUDA_EVAL_SCORE_BYTES if on_cuda else EVAL_SCORE_BYTES
    cap = CUDA_EVAL_BATCH_SIZE if on_cuda else EVAL_BATCH_SIZE
    return max(16, min(cap, budget // (4 * max(num_items, 1))))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters are on (the CPU for one without parameters)."""
    return next(iter(model.parameters()), torch.empty(0)).device


def scored_batches(model: Backbone, examples: Examples, max_len: int,
                   batch_size: int | None = None) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Each evaluation batch with the model's scores over every item [B, num_items], in eval
    mode, without gradients, the table reconstructed once for the whole pass."""
    model.eval()
    device = model_device(model)
    with torch.no_grad(), model.compressor.shared_weight(), large_blocks_mapped():
        rows = batch_size or eval_batch_size(model.compressor.num_items, device)
        for batch in examples.batches(rows, max_len, device=device):
            yield batch, model.score(batch.items, batch.lengths)


def evaluate_ranks(model: Backbone, examples: Examples, max_len: int,
                   batch_size: int | None = None) -> np.ndarray:
    """Pessimistic rank of every example's label among all real items."""
    ranks = [pessimistic_ranks(scores, batch.targets)
             for batch, scores in scored_batches(model, examples, max_len, batch_size)]
    return torch.cat(ranks).cpu().numpy()


def evaluate_ranks_and_ties(model: Backbone, examples: Examples, max_len: int,
                            batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`evaluate_ranks`, and whether each label ties with another item, in one pass (for the
    final test: validation every epoch needs the ranks alone)."""
    ranks, ties = [], []
    for batch, scores in scored_batches(model, examples, max_len, batch_size):
        ranks.append(pessimistic_ranks(scores, batch.targets))
        ties.append(tied_with_another(scores, batch.targets))
    return torch.cat(ranks).cpu().numpy(), torch.cat(ties).cpu().numpy()


@torch.no_grad()
def distinct_item_vectors(model: Backbone) -> int:
    """How many distinct rows the model's item table holds for its real items (items whose
    rows are equal get equal scores from every session)."""
    model.eval()
    with model.compressor.shared_weight():
        return int(torch.unique(model.compressor.current_weight()[1:], dim=0).shape[0])


def evaluate(model: Backbone, examples: Examples, max_len: int) -> dict[str, float]:
    return metrics_from_ranks(evaluate_ranks(model, examples, max_len))


def model_size(model: Backbone) -> dict[str, Any]:
    storage = model.compressor.storage()
    encoder = sum(p.numel() for p in model.non_item_parameters())
    item_values = sum(math.prod(t.shape) for t in storage.tensors)
    return {
        # what the deployed model holds: its encoder and the values the item table stores
        # (codes counted as values); training-only parts such as ccode's code encoder apart
        "parameters": encoder + item_values,
        "item_table_values": item_values,
        "training_parameters": sum(p.numel() for p in model.parameters()),
        "encoder_parameters": encoder,
        "item_storage": storage.to_dict(),
        "deployed_bytes": storage.total_bytes + 4 * encoder,
    }


def training_loss(model: Backbone, batch: Batch, precision: str = "fp32") -> torch.Tensor:
    """Full-softmax cross-entropy over the real items, plus the compressor's own loss if any.

    With `precision="bf16"` the forward matrix products run in bfloat16 (autocast; weights,
    optimiser state and the softmax stay float32). Evaluation is always float32.
    """
    with autocast(batch.items.device, precision), \
            model.compressor.shared_weight():  # one table (one code sample) for the step
        scores = model.score(batch.items, batch.lengths)
    loss = F.cross_entropy(scores.float()[:, 1:], batch.targets - 1)
    extra = model.compressor.extra_loss()
    return loss if extra is None else loss + extra


@dataclass
class TrainState:
    """What a checkpoint holds: enough to continue a killed run to the same result."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    stale_epochs: int = 0
    finished: bool = False
    # where each stretch of training ran: the first start, then every resume
    provenance: list[dict[str, Any]] = field(default_factory=list)


class SupervisedObjective:
    """What a Trainer optimises: here one model on its recommendation loss (plus its compressor's
    own loss). `ecbench.bench.training.distill.DistillationObjective` trains a teacher and a
    student together."""

    # Patience may end training only from this epoch on: before it, what trains is not yet
    # what is deployed (a distillation's mixup still annealing), so validation lags behind.
    settled_epoch = 0

    def __init__(self, model: Backbone) -> None:
        self.module = model

    def to(self, device: torch.device) -> None:
        """Move what the objective holds beside its module (nothing here)."""

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        return self.module.compressor.start_epoch(epoch)

    def end_epoch(self) -> dict[str, Any]:
        return {}

    def loss(self, batch: Batch, precision: str = "fp32") -> torch.Tensor:
        return training_loss(self.module, batch, precision)

    def evaluate(self, examples: Examples, max_len: int
                 ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Metrics of the model being selected, and of any models evaluated beside it."""
        return evaluate(self.module, examples, max_len), {}


class Trainer:
    """Adam with L2, full-softmax cross-entropy, evaluation every epoch, patience on validation.

    `select_on="test"` is the paper's legacy protocol (best epoch per metric on the test set); it
    is labelled as such in every record.
    """

    def __init__(self, config: RunConfig, prepared: Prepared, model: Backbone,
                 checkpoint_path: Path, progress: bool = False,
                 log: Callable[[str], None] = print, select: bool = True,
                 objective: Any = None, device: torch.device = torch.device("cpu")) -> None:
        self.config = config
        self.select = select
        self.prepared = prepared
        self.objective = objective or SupervisedObjective(model)
        self.device = device
        # what is optimised and checkpointed, on the device before the optimiser sees it
        self.model = self.objective.module.to(device)
        self.objective.to(device)
        self.checkpoint_path = checkpoint_path
        self.progress = progress
        self.log = log
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.l2,
                                          fused=True)
        self.state = TrainState()

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        payload = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "torch_rng": rng_state(self.device), "state": self.state.__dict__,
        }
        atomic_write(self.checkpoint_path, lambda handle: torch.save(payload, handle))

    def load_checkpoint(self) -> bool:
        if not self.checkpoint_path.is_file():
            return False
        payload = load_weights(self.checkpoint_path)
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except Exception as exc:
            raise EcbenchError(f"checkpoint {self.checkpoint_path} is unreadable or belongs to "
                               f"another model: {exc}") from None
        set_rng_state(payload["torch_rng"], self.device)
        self.state = TrainState(**payload["state"])
        return True

    # -- training ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float, dict[str, Any]]:
        """One pass over the training examples in a seeded order.

        Returns the mean loss, the seconds it took and what the objective reports (e.g. the
        distillation's loss terms and mixup weight)."""
        cfg, model, fit = self.config, self.model, self.prepared.fit
        model.train()
        if cfg.dropout_epochs is not None and epoch > cfg.dropout_epochs:
            set_dropout(model, False)
        info = self.objective.start_epoch(epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(fit))
        batches = fit.batches(cfg.batch_size, cfg.max_len, order, device=self.device)
        if self.progress:
            from tqdm import tqdm
            batches = tqdm(batches, total=fit.num_batches(cfg.batch_size), mininterval=2.0,
                           desc=f"epoch {epoch}", leave=False, unit="batch")
        # The loss is summed on the device and read back every `check_every` steps: at once
        # on the CPU (where reading it costs nothing), rarely on a GPU (each read waits for it).
        check_every = 1 if self.device.type == "cpu" else CUDA_LOSS_CHECK_STEPS
        total, window = 0.0, torch.zeros((), device=self.device)
        count, first, start = 0, 0, time.perf_counter()
        for step, batch in enumerate(batches):
            loss = self.objective.loss(batch, cfg.precision)
            window += loss.detach() * len(batch.targets)
            count += len(batch.targets)
            if (step + 1) % check_every == 0:
                total += self._checked(window, epoch, first, step)
                window.zero_()
                first = step + 1
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        total += self._checked(window, epoch, first, step)
        synchronize(self.device)
        return total / count, time.perf_counter() - start, {**info, **self.objective.end_epoch()}

    def _checked(self, loss_sum: torch.Tensor, epoch: int, first: int, last: int) -> float:
        """`loss_sum` as a float; a non-finite one stops training, naming where."""
        value = loss_sum.item()
        if math.isfinite(value):
            return value
        kept = (f"the last good checkpoint (epoch {self.state.epoch}) is kept at "
                f"{self.checkpoint_path}" if self.checkpoint_path.is_file()
                else "no epoch had completed, so there is no checkpoint")
        where = f"step {last}" if first >= last else f"steps {first}-{last}"
        raise TrainingDiverged(f"loss became {value} at epoch {epoch}, {where}; {kept}")

    def _evaluate_into(self, entry: dict[str, Any], split: str, examples: Examples) -> None:
        main, beside = self.objective.evaluate(examples, self.config.max_len)
        entry[split] = main
        for name, metrics in beside.items():
            entry[f"{name}_{split}"] = metrics

    def fit(self) -> TrainState:
        cfg, state = self.config, self.state
        legacy = cfg.select_on == "test"
        while not state.finished and state.epoch < cfg.epochs:
            epoch = state.epoch + 1
            loss, seconds, info = self.train_epoch(epoch)
            if not self.select:  # a refit: a fixed number of epochs, no evaluation
                state.history.append({"epoch": epoch, "train_loss": loss, "train_seconds": seconds,
                                      "pairs_per_second": len(self.prepared.fit) / seconds,
                                      **info})
                state.epoch = state.best_epoch = epoch
                state.best_state = copy.deepcopy(self.model.state_dict())
                state.finished = epoch >= cfg.epochs
                self.log(f"refit epoch {epoch}/{cfg.epochs}: loss {loss:.4f}, {seconds:.0f}s")
                self.save_checkpoint()
                continue
            eval_start = time.perf_counter()
            entry: dict[str, Any] = {
                "epoch": epoch, "train_loss": loss, "train_seconds": seconds,
                "pairs_per_second": len(self.prepared.fit) / seconds, **info}
            self._evaluate_into(entry, "test" if legacy else "validation",
                                self.prepared.test if legacy else self.prepared.validation)
            entry["eval_seconds"] = time.perf_counter() - eval_start
            state.history.append(entry)
            watched = entry["test" if legacy else "validation"][cfg.select_metric]
            if watched > state.best_value:
                state.best_value, state.best_epoch, state.stale_epochs = watched, epoch, 0
                state.best_state = copy.deepcopy(self.model.state_dict())
            else:
                state.stale_epochs += 1
            state.epoch = epoch
            patience_out = (state.stale_epochs >= cfg.patience
                            and epoch >= self.objective.settled_epoch)
            state.finished = patience_out or epoch >= cfg.epochs
            self.log(f"epoch {epoch}: loss {loss:.4f}, {seconds:.0f}s, "
                     f"{'test' if legacy else 'validation'} {cfg.select_metric} {watched:.2f}"
                     f" (best {state.best_value:.2f} at epoch {state.best_epoch})")
            self.save_checkpoint()
        return state
