"""One experiment end to end: data, model, training, final test, run record."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.config import RunConfig
from bench.metrics import metrics_from_ranks, popularity_ranks
from bench.records import (RECORD_SCHEMA, atomic_write, find_record, load_record, now_iso,
                           provenance, record_path, write_record)
from bench.teacher import copy_encoder, resolve_teacher, teacher_table
from bench.cpu import configure_cpu
from bench.train import (Trainer, apply_budget, build_model, evaluate, load_dataset,
                         model_size, prepare)

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

    torch.manual_seed(config.seed)
    model = build_model(config, dataset.num_items)
    teacher_info = None
    if model.compressor.uses_teacher():
        teacher = resolve_teacher(
            config, dataset.checksum, results_dir=results_dir, workdir=workdir, log=log,
            train=lambda c: run_experiment(c, data_root=data_root, results_dir=results_dir,
                                           workdir=workdir, resume=resume, threads=threads,
                                           progress=progress, log=log))
        if not (resume and checkpoint.is_file()):  # a checkpoint already holds all of this
            model.compressor.init_from_table(
                teacher_table(teacher, lambda c: build_model(c, dataset.num_items)))
            encoder_copied = config.student_init != "random" and copy_encoder(
                model, config.backbone, teacher, required=config.student_init == "teacher")
            log(f"student initialised from teacher {teacher.record['key']}"
                f"{' (table and encoder)' if encoder_copied else ' (table)'}")
        teacher_info = teacher.summary()
    trainer = Trainer(config, prepared, model, checkpoint, progress=progress, log=log)
    if resume:
        if trainer.load_checkpoint():
            log(f"resuming from {checkpoint} after epoch {trainer.state.epoch}")
        else:
            log(f"no checkpoint at {checkpoint}; starting from scratch")
    state = trainer.fit()

    model.load_state_dict(state.best_state)
    model.compressor.deploy()  # the final test sees what a phone would run
    legacy = config.select_on == "test"
    if legacy:
        test, test_epochs = {}, {}
        for metric in state.history[0]["test"]:
            best = max(state.history, key=lambda e: e["test"][metric])
            test[metric], test_epochs[metric] = best["test"][metric], best["epoch"]
    else:
        test, test_epochs = evaluate(model, prepared.test, config.max_len), None
    selected = state.history[state.best_epoch - 1]

    model_file = Path(workdir) / "models" / f"{key}.pt"
    deployed_state = model.state_dict()
    atomic_write(model_file, lambda handle: torch.save(deployed_state, handle))

    epochs_run = [e["train_seconds"] for e in state.history]
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
            "epoch": state.best_epoch, "epochs_run": state.epoch,
            "label": LEGACY_LABEL if legacy else
            "best validation epoch; test evaluated once, at that epoch",
        },
        "validation_at_selected": selected["validation"],
        "test": test,
        "test_epochs": test_epochs,
        "teacher": teacher_info,
        "baselines": {"popularity": metrics_from_ranks(
            popularity_ranks(prepared.popularity, prepared.test.targets))},
        "size": model_size(model),
        "timing": {
            "train_seconds_per_epoch_median": float(np.median(epochs_run)),
            "pairs_per_second_median": float(np.median([e["pairs_per_second"]
                                                        for e in state.history])),
            "wall_seconds": time.perf_counter() - wall_start,
        },
        "history": state.history,
        "model_file": str(model_file),
        "provenance": origin,
        "started": started,
        "finished": now_iso(),
    }
    path = record_path(results_dir, record["config"], key)
    write_record(path, record)
    checkpoint.unlink(missing_ok=True)
    return record, path
