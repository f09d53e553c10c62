"""One experiment end to end: data, model, training, final test, run record."""

from __future__ import annotations

import dataclasses
import fcntl
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ecbench import compressors
from ecbench.backbones import Backbone
from ecbench.bench.training.config import RunConfig, build_part_config
from ecbench.bench.evaluation.cases import session_recency_ranks, test_case_groups
from ecbench.bench.training.distill import DistillationObjective, DistillationPair, DistillConfig
from ecbench.bench.errors import ConfigError, OverTimeLimit
from ecbench.bench.evaluation.metrics import metrics_by_case, metrics_from_ranks, popularity_ranks
from ecbench.bench.records import (USER_RESULTS, RECORD_SCHEMA, atomic_write, ensure_writable,
                                   find_record, load_record, now_iso, provenance, record_path,
                                   write_record)
from ecbench.bench.cpu import configure_cpu, restores_cpu_settings
from ecbench.bench.device import describe_device, resolve_device
from ecbench.bench.data.sessions import SessionDataset
from ecbench.bench.training.plan import Plan, measure_plan, run_chain, stages_to_train
from ecbench.bench.training.teacher import (Teacher, copy_encoder, pretrain_config, resolve_pretrained,
                           resolve_teacher, teacher_table)
from ecbench.bench.training.train import (Prepared, Trainer, TrainState, apply_budget, build_model,
                                          check_memory, distinct_item_vectors, evaluate,
                                          evaluate_ranks_and_ties, load_dataset, model_size,
                                          prepare)

def start_from_teacher(model: Backbone, config: RunConfig, teacher: Teacher, num_items: int,
                       log: Callable[[str], None]) -> None:
    """A student's start: its table from the teacher's (codes, TT-SVD), its encoder copied."""
    model.compressor.init_from_table(teacher_table(teacher, lambda c: build_model(c, num_items)))
    copied = config.student_init != "random" and copy_encoder(
        model, config.backbone, teacher, required=config.student_init == "teacher")
    log(f"student initialised from teacher {teacher.record['key']}"
        f"{' (table and encoder)' if copied else ' (table)'}")


LEGACY_LABEL = ("legacy: trained on every training session, best epoch per metric chosen on "
                "the test set (the paper's protocol); optimistic, not comparable with "
                "validation-selected results")


@dataclass
class Trained:
    """What a training procedure hands to the final test and the record."""

    model: Backbone  # the selected model, to be deployed and tested
    history: list[dict[str, Any]]
    selected: dict[str, Any]  # the history entry of the selected epoch
    stretches: list[dict[str, Any]]  # provenance of the first start and of every resume
    refit: dict[str, Any] | None = None
    beside: dict[str, Backbone] = field(default_factory=dict)  # tested too (a distilled teacher)
    record_extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """The run's fixed inputs that every training procedure needs."""

    config: RunConfig
    dataset: SessionDataset
    prepared: Prepared
    checkpoint: Path
    workdir: Path
    resume: bool
    progress: bool
    log: Callable[[str], None]
    origin: dict[str, Any]
    device: torch.device = torch.device("cpu")


@restores_cpu_settings
def run_experiment(config: RunConfig, *, data_root: str | None = None,
                   results_dir: Path = USER_RESULTS, workdir: Path = Path(".ecbench"),
                   resume: bool = False, force: bool = False, threads: int = 2,
                   progress: bool = False, log: Callable[[str], None] = print,
                   announce: bool = True, device: torch.device | str = "cpu",
                   max_hours: float | None = None) -> tuple[dict[str, Any], Path]:
    """Train and evaluate `config` on `device` (`bench.device.resolve_device`); write and
    return its run record (reused if already run, wherever it ran). With `announce`, first log
    what the run will train (teacher, Stu-base, distillation) and an upper bound on its time
    (`plan.Plan`); with `max_hours`, train nothing if that bound exceeds it (`OverTimeLimit`)."""
    if max_hours is not None and not max_hours > 0:
        raise ConfigError(f"--max-hours must be positive, got {max_hours}")
    started = now_iso()
    device = resolve_device(device)
    ensure_writable(Path(results_dir) / "runs")
    ensure_writable(Path(workdir), "work")
    # before training: the code that actually ran, and where
    origin = {**provenance(threads), "device": describe_device(device)}
    wall_start = time.perf_counter()
    config, dataset, prepared = load_prepared(config, data_root, threads, device)
    key = config.key(dataset.checksum)
    with run_lock(Path(workdir), key, log):  # one process trains a run; others wait, then reuse
        existing = find_record(results_dir, key)
        checkpoint = Path(workdir) / "checkpoints" / f"{key}.pt"
        if existing is not None and not force and not (resume and checkpoint.is_file()):
            log(f"reusing the record of an identical run: {existing}")
            return load_record(existing), existing
        if announce or max_hours is not None:
            plan = run_plan(config, dataset, prepared, results_dir, Path(workdir), device)
            if announce:
                log(announcement(dataset, prepared, plan))
            if max_hours is not None and plan.seconds > max_hours * 3600:
                raise OverTimeLimit(f"run {key} would train for up to {plan.seconds / 3600:.1f} h "
                                    f"on this machine, over --max-hours {max_hours:g}: nothing "
                                    "trained (a faster machine, or a GPU with --device cuda, "
                                    "can take it)")
        context = RunContext(config, dataset, prepared, checkpoint, Path(workdir), resume,
                             progress, log, origin, device)
        return train_and_record(context, key, data_root=data_root, results_dir=results_dir,
                                force=force, threads=threads, started=started,
                                wall_start=wall_start)


def load_prepared(config: RunConfig, data_root: str | None, threads: int,
                  device: torch.device = torch.device("cpu")
                  ) -> tuple[RunConfig, SessionDataset, Prepared]:
    """The run's data, read and split, with its byte budget solved and its memory (the
    device's) checked before anything is sized by the catalogue."""
    configure_cpu(threads)
    dataset = load_dataset(config.data, data_root)
    config = apply_budget(config, dataset.num_items)
    check_memory(config, dataset.num_items, dataset.name, device)
    return config, dataset, prepare(config, dataset)


def describe_data(dataset: SessionDataset, prepared: Prepared) -> str:
    """One line of the dataset's counts, so a user sees what was read before training."""
    return (f"data {dataset.name}: {len(dataset.train):,} training sessions, "
            f"{len(prepared.fit):,} training pairs and {len(prepared.validation):,} validation "
            f"pairs, {dataset.num_items - 1:,} items, {len(prepared.test):,} test cases")


def run_plan(config: RunConfig, dataset: SessionDataset, prepared: Prepared,
             results_dir: Path, workdir: Path, device: torch.device = torch.device("cpu")
             ) -> Plan:
    """What `config` would train that is not recorded yet, each with its time bound."""
    stages = stages_to_train(config, dataset.checksum,
                             needs_teacher=needs_teacher(config, dataset.num_items),
                             results_dir=results_dir, workdir=workdir)
    return measure_plan(stages, prepared, device)


def announcement(dataset: SessionDataset, prepared: Prepared, plan: Plan) -> str:
    """Two lines before training: the dataset's counts, and what the run would train that is
    not recorded yet with its time bound (`run_plan`)."""
    return describe_data(dataset, prepared) + "\n" + plan.describe()


@restores_cpu_settings
def plan_run(config: RunConfig, *, data_root: str | None, results_dir: Path, workdir: Path,
             threads: int, device: torch.device | str = "cpu") -> str:
    """`announcement` of a run without running it (`ecbench run --plan-only`)."""
    device = resolve_device(device)
    config, dataset, prepared = load_prepared(config, data_root, threads, device)
    return announcement(dataset, prepared,
                        run_plan(config, dataset, prepared, results_dir, workdir, device))


@contextmanager
def run_lock(workdir: Path, key: str, log: Callable[[str], None]) -> Iterator[None]:
    """Held while one process trains run `key`. Another process asking for the same run (two
    sweep jobs that need the same teacher) waits for it, then finds its record."""
    path = workdir / "locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is training run {key}: waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_and_record(context: "RunContext", key: str, *, data_root: str | None,
                     results_dir: Path, force: bool, threads: int, started: str,
                     wall_start: float) -> tuple[dict[str, Any], Path]:
    """Train the run of `context` (its teacher and pretrained student first, if it needs them
    and they are not recorded), test it once and write its record."""
    config, dataset, workdir, log = context.config, context.dataset, context.workdir, context.log

    def train_run(c: RunConfig, again: bool) -> tuple[dict[str, Any], Path]:
        return run_experiment(c, data_root=data_root, results_dir=results_dir, workdir=workdir,
                              resume=context.resume, force=again, threads=threads,
                              progress=context.progress, log=log, announce=False,
                              device=context.device)

    teacher = None
    starts_from_table = needs_teacher(config, dataset.num_items)  # also checks the options
    if config.distill is not None or starts_from_table:
        teacher = resolve_teacher(config, dataset.checksum, results_dir=results_dir,
                                  workdir=workdir, train=train_run, log=log)
    if config.distill is not None:
        pretrained = resolve_pretrained(config, dataset.checksum, results_dir=results_dir,
                                        workdir=workdir, train=train_run, log=log)
        trained = train_distilled(context, teacher, pretrained)
    else:
        trained = train_supervised(context, teacher, results_dir, force)

    record = final_test_and_record(context, trained, key, teacher, started, wall_start)
    path = record_path(results_dir, record["config"], key)
    write_record(path, record)
    context.checkpoint.unlink(missing_ok=True)
    return record, path


def final_test_and_record(ctx: RunContext, trained: Trained, key: str, teacher: Teacher | None,
                          started: str, wall_start: float) -> dict[str, Any]:
    """Deploy the selected model, test it once (and any model trained beside it), save the
    deployed weights, and assemble the run record."""
    config, dataset, prepared, workdir = ctx.config, ctx.dataset, ctx.prepared, ctx.workdir
    model = trained.model
    model.compressor.deploy()  # the final test sees what a phone would run
    legacy = config.select_on == "test"
    if legacy:
        test = best_per_metric(trained.history, "test")
        test_epochs = best_per_metric(trained.history, "test", epochs=True)
    else:
        ranks, tied = evaluate_ranks_and_ties(model, prepared.test, config.max_len)
        test, test_epochs = metrics_from_ranks(ranks), None
    with model.compressor.mixed_scoring() as mixes:
        # the paper's scoring of the same model (its released code's): a labelled legacy figure
        test_mixed = evaluate(model, prepared.test, config.max_len) if mixes else None
    with model.compressor.compressed_scoring() as legacy_table:
        # a legacy scoring (ccode's mixed table): what the same model scores deployed, beside
        test_compressed = (evaluate(model, prepared.test, config.max_len) if legacy_table
                           else None)
    model_file = save_model(workdir, key, model)
    beside = {}
    for name, other in trained.beside.items():
        beside[name] = {
            "test": (best_per_metric(trained.history, f"{name}_test") if legacy
                     else evaluate(other, prepared.test, config.max_len)),
            "validation_at_selected": trained.selected.get(f"{name}_validation"),
            "model_file": str(save_model(workdir, f"{key}-{name}", other))}

    epochs_run = [e["train_seconds"] for e in trained.history]
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "key": key,
        "config": config.to_dict(),
        "dataset": {
            "name": dataset.name, "checksum": dataset.checksum, "num_items": dataset.num_items,
            "train_sessions": len(dataset.train), "fit_examples": len(prepared.fit),
            "validation": None if legacy else {
                "mode": prepared.split.mode, "fraction": prepared.split.fraction,
                "sessions": len(prepared.split.validation), "examples": len(prepared.validation)},
            "test_examples": len(prepared.test),
            "hot_items": int(prepared.hot_items.sum()),
        },
        "seed": config.seed,
        "selection": {
            "on": "test" if legacy else "validation", "metric": config.select_metric,
            "epoch": trained.selected["epoch"], "epochs_run": len(trained.history),
            "refit": trained.refit,
            "label": LEGACY_LABEL if legacy else
            "best validation epoch; test evaluated once, at that epoch",
        },
        "validation_at_selected": trained.selected.get("validation"),
        "test": test,
        "test_epochs": test_epochs,
        # with a legacy scoring table: the selected model scored with its compressed table alone
        "test_compressed_table": test_compressed,
        # legacy: the same model scored with the teacher's table mixed in at its final eta
        "test_mixed_table": test_mixed,
        # what the deployed table can tell apart: its distinct item rows, and the share of test
        # labels that tie with another item (ranked against the model)
        "deployed_table": None if legacy else {
            "real_items": dataset.num_items - 1,
            "distinct_item_vectors": distinct_item_vectors(model),
            "test_labels_tied_percent": float(100.0 * tied.mean())},
        "test_by_case": None if legacy else metrics_by_case(
            ranks, test_case_groups(prepared.test, prepared.hot_items, config.max_len)),
        "teacher": teacher.summary() if teacher is not None else None,
        **trained.record_extra,
        **({"beside": beside} if beside else {}),
        "baselines": {
            "popularity": metrics_from_ranks(
                popularity_ranks(prepared.popularity, prepared.test.targets)),
            "session recency": metrics_from_ranks(session_recency_ranks(
                prepared.test, config.max_len, dataset.num_items - 1)),
        },
        "size": model_size(model),
        "timing": {
            "train_seconds_per_epoch_median": float(np.median(epochs_run)),
            "pairs_per_second_median": float(np.median([e["pairs_per_second"]
                                                        for e in trained.history])),
            "wall_seconds": time.perf_counter() - wall_start,
        },
        "history": trained.history,
        "model_file": str(model_file),
        "provenance": trained.stretches[0],  # the code and machine that started the training
        "resumed": trained.stretches[1:],  # and those that continued it after a kill, if any
        "started": started,
        "finished": now_iso(),
    }
    return record


def chain_keys(config: RunConfig, dataset: SessionDataset) -> list[str]:
    """The keys of every run that `config`'s run trains or reuses, prerequisites first and its
    own last, its --ratio budget solved as the run solves it (what a cluster executor ships to
    a run and waits on)."""
    config = apply_budget(config, dataset.num_items)
    chain = run_chain(config, needs_teacher=needs_teacher(config, dataset.num_items))
    return [stage.config.key(dataset.checksum) for stage in chain]


def needs_teacher(config: RunConfig, num_items: int) -> bool:
    """Whether the configured compressor starts from a trained table (built alone, cheaply)."""
    entry = compressors.registry.get(config.compressor)
    part = build_part_config(entry.config, config.compressor_options,
                             f"compressor {config.compressor}")
    try:
        return entry.builder(part, num_items=num_items, dim=config.dim).uses_teacher()
    except ValueError as exc:
        raise ConfigError(f"{config.compressor}: {exc}") from None


def best_per_metric(history: list[dict[str, Any]], split: str, epochs: bool = False
                    ) -> dict[str, Any]:
    """The legacy protocol: each metric's best value over the epochs (or the epoch of it)."""
    out = {}
    for metric in history[0][split]:
        best = max(history, key=lambda e: e[split][metric])
        out[metric] = best["epoch"] if epochs else best[split][metric]
    return out


def save_model(workdir: Path, name: str, model: Backbone) -> Path:
    """The model's weights, on the CPU so that the file loads on any machine."""
    model_file = Path(workdir) / "models" / f"{name}.pt"
    state = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    atomic_write(model_file, lambda handle: torch.save(state, handle))
    return model_file


def train_supervised(ctx: RunContext, teacher: Teacher | None, results_dir: Path,
                     force: bool) -> Trained:
    """Plain training, selected on validation; with --refit, retrained on all sessions."""
    config, dataset = ctx.config, ctx.dataset

    def train_phase(prepared: Prepared, checkpoint: Path, phase_config: RunConfig,
                    select: bool) -> tuple[Backbone, TrainState]:
        torch.manual_seed(config.seed)
        model = build_model(config, dataset.num_items)
        resuming = ctx.resume and checkpoint.is_file()  # the checkpoint holds any teacher start
        if model.compressor.uses_item_counts() and not resuming:  # the checkpoint holds it
            model.compressor.init_from_counts(torch.from_numpy(prepared.popularity))
        if teacher is not None and not resuming:  # on the CPU, before the model moves
            start_from_teacher(model, config, teacher, dataset.num_items, ctx.log)
        trainer = Trainer(phase_config, prepared, model, checkpoint, progress=ctx.progress,
                          log=ctx.log, select=select, device=ctx.device)
        if resuming and trainer.load_checkpoint():
            ctx.log(f"resuming from {checkpoint} after epoch {trainer.state.epoch}")
        trainer.state.provenance.append(ctx.origin)
        return model, trainer.fit()

    # With --refit, the same run without it is exactly the first phase: reuse its record if any.
    first_phase = (find_record(results_dir, dataclasses.replace(config, refit=None).key(
        dataset.checksum)) if config.refit and not force else None)
    if first_phase is not None:
        ctx.log(f"epoch count chosen by the recorded run {first_phase}")
        earlier = load_record(first_phase)
        history = earlier["history"]
        selected = history[earlier["selection"]["epoch"] - 1]
        state = TrainState(epoch=len(history), history=history, best_epoch=selected["epoch"])
        stretches = [earlier["provenance"], *earlier.get("resumed", [])]
    else:
        model, state = train_phase(ctx.prepared, ctx.checkpoint, config, select=True)
        history = state.history
        selected = history[state.best_epoch - 1]
        stretches = state.provenance
    refit_info = None
    if config.refit:
        refit_checkpoint = ctx.checkpoint.with_name(f"{ctx.checkpoint.stem}-refit.pt")
        ctx.log(f"refit on all training sessions for the selected {state.best_epoch} epochs")
        full = prepare(config, dataset, refit=True)
        model, state = train_phase(full, refit_checkpoint,
                                   dataclasses.replace(config, epochs=state.best_epoch),
                                   select=False)
        refit_info = {"epochs": state.epoch, "examples": len(full.fit), "history": state.history,
                      "first_phase_record": str(first_phase) if first_phase else None,
                      "provenance": state.provenance}
        refit_checkpoint.unlink(missing_ok=True)
    model.load_state_dict(state.best_state)
    return Trained(model, history, selected, stretches, refit=refit_info)


def train_distilled(ctx: RunContext, teacher: Teacher, pretrained: Teacher) -> Trained:
    """Algorithm 1 from line 3: the pretrained student and the teacher, trained together."""
    config, num_items = ctx.config, ctx.dataset.num_items
    torch.manual_seed(config.seed)
    student = build_model(pretrain_config(config), num_items)
    if type(student).encode_views is Backbone.encode_views:
        raise ConfigError(f"backbone {config.backbone} has no hot/cold sub-session readouts "
                          "(Eq. 18), which distillation needs")
    teacher_model = build_model(teacher.config, num_items)
    teacher_model.load_state_dict(teacher.state)
    student.load_state_dict(pretrained.state)
    student.compressor.undeploy()
    try:
        pair = DistillationPair(teacher_model, student, DistillConfig(**config.distill))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    epochs = pair.config.epochs or config.epochs
    objective = DistillationObjective(pair, torch.from_numpy(ctx.prepared.hot_items), epochs)
    trainer = Trainer(dataclasses.replace(config, epochs=epochs), ctx.prepared, student,
                      ctx.checkpoint, progress=ctx.progress, log=ctx.log, objective=objective,
                      device=ctx.device)
    if ctx.resume and trainer.load_checkpoint():
        ctx.log(f"resuming from {ctx.checkpoint} after epoch {trainer.state.epoch}")
    else:
        ctx.log(f"distilling teacher {teacher.record['key']} into pretrained student "
                f"{pretrained.record['key']}")
    trainer.state.provenance.append(ctx.origin)
    state = trainer.fit()
    pair.load_state_dict(state.best_state)
    pair.eval()
    return Trained(student, state.history, state.history[state.best_epoch - 1],
                   state.provenance, beside={"teacher": teacher_model},
                   record_extra={"pretrained": pretrained.summary()})
