"""One experiment end to end: data, model, training, final test, run record."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from backbones import Backbone
from bench.config import RunConfig
from bench.metrics import metrics_from_ranks, popularity_ranks
from bench.records import (RECORD_SCHEMA, atomic_write, find_record, load_record, now_iso,
                           provenance, record_path, write_record)
from bench.cpu import configure_cpu
from bench.teacher import Teacher, copy_encoder, resolve_teacher, teacher_table
from bench.train import (Prepared, Trainer, TrainState, apply_budget, build_model, evaluate,
                         load_dataset, model_size, prepare)

def start_from_teacher(model: Backbone, config: RunConfig, teacher: Teacher, num_items: int,
                       log: Callable[[str], None]) -> None:
    """A student's start: its table from the teacher's (codes, TT-SVD), its encoder copied."""
    model.compressor.init_from_table(teacher_table(teacher, lambda c: build_model(c, num_items)))
    copied = config.student_init != "random" and copy_encoder(
        model, config.backbone, teacher, required=config.student_init == "teacher")
    log(f"student initialised from teacher {teacher.record['key']}"
        f"{' (table and encoder)' if copied else ' (table)'}")


LEGACY_LABEL = ("legacy: best epoch per metric chosen on the test set (the paper's protocol); "
                "optimistic, not comparable with validation-selected results")


def run_experiment(config: RunConfig, *, data_root: str | None = None,
                   results_dir: Path = Path("results"), workdir: Path = Path(".ecbench"),
                   resume: bool = False, force: bool = False, threads: int = 2,
                   progress: bool = False, log: Callable[[str], None] = print
                   ) -> tuple[dict[str, Any], Path]:
    """Train and evaluate `config`; write and return its run record (reused if already run)."""
    started = now_iso()
    origin = provenance(threads)  # before training: the code that actually ran
    wall_start = time.perf_counter()
    configure_cpu(threads)
    dataset = load_dataset(config.data, data_root)
    config = apply_budget(config, dataset.num_items)
    prepared = prepare(config, dataset)
    key = config.key(dataset.checksum)
    existing = find_record(results_dir, key)
    checkpoint = Path(workdir) / "checkpoints" / f"{key}.pt"
    if existing is not None and not force and not (resume and checkpoint.is_file()):
        log(f"reusing the record of an identical run: {existing}")
        return load_record(existing), existing

    teacher = None
    if build_model(config, dataset.num_items).compressor.uses_teacher():
        teacher = resolve_teacher(
            config, dataset.checksum, results_dir=results_dir, workdir=workdir, log=log,
            train=lambda c, again: run_experiment(
                c, data_root=data_root, results_dir=results_dir, workdir=workdir, resume=resume,
                force=again, threads=threads, progress=progress, log=log))

    def train_phase(prepared: Prepared, checkpoint: Path, phase_config: RunConfig,
                    select: bool) -> tuple[Backbone, TrainState]:
        torch.manual_seed(config.seed)
        model = build_model(config, dataset.num_items)
        trainer = Trainer(phase_config, prepared, model, checkpoint, progress=progress, log=log,
                          select=select)
        if resume and trainer.load_checkpoint():  # the checkpoint holds any teacher start too
            log(f"resuming from {checkpoint} after epoch {trainer.state.epoch}")
        elif teacher is not None:
            start_from_teacher(model, config, teacher, dataset.num_items, log)
        trainer.state.provenance.append(origin)
        return model, trainer.fit()

    # With --refit, the same run without it is exactly the first phase: reuse its record if any.
    first_phase = (find_record(results_dir, dataclasses.replace(config, refit=None).key(
        dataset.checksum)) if config.refit and not force else None)
    if first_phase is not None:
        log(f"epoch count chosen by the recorded run {first_phase}")
        earlier = load_record(first_phase)
        history = earlier["history"]
        selected = history[earlier["selection"]["epoch"] - 1]
        state = TrainState(epoch=len(history), history=history, best_epoch=selected["epoch"])
        stretches = [earlier["provenance"], *earlier.get("resumed", [])]
    else:
        model, state = train_phase(prepared, checkpoint, config, select=True)
        history = state.history
        selected = history[state.best_epoch - 1]
        stretches = state.provenance
    refit_info = None
    if config.refit:
        refit_checkpoint = checkpoint.with_name(f"{key}-refit.pt")
        log(f"refit on all training sessions for the selected {state.best_epoch} epochs")
        full = prepare(config, dataset, refit=True)
        model, state = train_phase(full, refit_checkpoint,
                                   dataclasses.replace(config, epochs=state.best_epoch),
                                   select=False)
        refit_info = {"epochs": state.epoch, "examples": len(full.fit), "history": state.history,
                      "first_phase_record": str(first_phase) if first_phase else None,
                      "provenance": state.provenance}
        refit_checkpoint.unlink(missing_ok=True)

    model.load_state_dict(state.best_state)
    model.compressor.deploy()  # the final test sees what a phone would run
    legacy = config.select_on == "test"
    if legacy:
        test, test_epochs = {}, {}
        for metric in history[0]["test"]:
            best = max(history, key=lambda e: e["test"][metric])
            test[metric], test_epochs[metric] = best["test"][metric], best["epoch"]
    else:
        test, test_epochs = evaluate(model, prepared.test, config.max_len), None

    model_file = Path(workdir) / "models" / f"{key}.pt"
    deployed_state = model.state_dict()
    atomic_write(model_file, lambda handle: torch.save(deployed_state, handle))

    epochs_run = [e["train_seconds"] for e in history]
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "key": key,
        "config": config.to_dict(),
        "dataset": {
            "name": dataset.name, "checksum": dataset.checksum, "num_items": dataset.num_items,
            "train_sessions": len(dataset.train), "fit_examples": len(prepared.fit),
            "validation": {"mode": prepared.split.mode, "fraction": prepared.split.fraction,
                           "sessions": len(prepared.split.validation),
                           "examples": len(prepared.validation)},
            "test_examples": len(prepared.test),
            "hot_items": int(prepared.hot_items.sum()),
        },
        "seed": config.seed,
        "selection": {
            "on": "test" if legacy else "validation", "metric": config.select_metric,
            "epoch": selected["epoch"], "epochs_run": len(history), "refit": refit_info,
            "label": LEGACY_LABEL if legacy else
            "best validation epoch; test evaluated once, at that epoch",
        },
        "validation_at_selected": selected["validation"],
        "test": test,
        "test_epochs": test_epochs,
        "teacher": teacher.summary() if teacher is not None else None,
        "baselines": {"popularity": metrics_from_ranks(
            popularity_ranks(prepared.popularity, prepared.test.targets))},
        "size": model_size(model),
        "timing": {
            "train_seconds_per_epoch_median": float(np.median(epochs_run)),
            "pairs_per_second_median": float(np.median([e["pairs_per_second"]
                                                        for e in history])),
            "wall_seconds": time.perf_counter() - wall_start,
        },
        "history": history,
        "model_file": str(model_file),
        "provenance": stretches[0],  # the code and machine that started the training
        "resumed": stretches[1:],  # and those that continued it after a kill, if any
        "started": started,
        "finished": now_iso(),
    }
    path = record_path(results_dir, record["config"], key)
    write_record(path, record)
    checkpoint.unlink(missing_ok=True)
    return record, path
