"""Benchmarks of the hot paths whose results are stored as records (not timed tests)."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ecbench.bench.data.batching import Batch
from ecbench.bench.training.config import RunConfig, backbone_preset
from ecbench.bench.records import load_weights, now_iso, provenance, write_json
from ecbench.bench.cpu import configure_cpu, restores_cpu_settings
from ecbench.bench.device import describe_device, synchronize
from ecbench.bench.training.distill import DistillationObjective, DistillationPair, DistillConfig
from ecbench.bench.training.teacher import teacher_config
from ecbench.bench.training.train import (Prepared, SupervisedObjective, build_model,
                                          eval_batch_size, evaluate_ranks, load_dataset, prepare)

WARMUP_STEPS = 20
# On a GPU, steps are timed in blocks of this many (one synchronisation a block), so that the
# timing keeps the queue of launched work that training has, which a wait per step would drain.
CUDA_TIMING_BLOCK = 25


@restores_cpu_settings
def benchmark_training(config: RunConfig, *, data_root: str | None, steps: int, threads: int,
                       results_dir: Path, device: torch.device = torch.device("cpu")
                       ) -> tuple[dict[str, Any], Path]:
    """Time training steps (batch building, forward, full softmax, backward, Adam) at `config`
    on `device`.

    With `steps == 0` one whole epoch is timed; otherwise `steps` steps after a warm-up, and the
    epoch time is extrapolated from the median step. Anything but the
    teacher itself (a distillation, a compressed table, another backbone) is timed alternately
    with the teacher's plain training (SASRec, full table, the same settings), in the same
    process, so the ratio of the two (`cost_vs_teacher`) holds on a busy machine. On the CPU
    each step is timed; on a GPU each block of `CUDA_TIMING_BLOCK` steps, as the mean step.
    """
    configure_cpu(threads)
    torch.manual_seed(config.seed)
    prepared = prepare(config, load_dataset(config.data, data_root))
    objectives = {"run": training_objective(config, prepared)}
    reference = reference_teacher(config)
    if reference != config:
        objectives["teacher"] = SupervisedObjective(
            build_model(reference, prepared.data.num_items))
    timers = {name: step_timer(objective, config, device)
              for name, objective in objectives.items()}
    fit = prepared.fit
    order = np.random.default_rng(config.seed).permutation(len(fit))
    n_batches = fit.num_batches(config.batch_size)
    timed = n_batches if steps == 0 else min(steps, n_batches - WARMUP_STEPS)
    block = 1 if device.type == "cpu" else CUDA_TIMING_BLOCK
    batches = fit.batches(config.batch_size, config.max_len, order, device=device)
    durations: dict[str, list[float]] = {name: [] for name in timers}
    done, target = 0, n_batches if steps == 0 else WARMUP_STEPS + timed
    while done < target:
        warming = steps != 0 and done < WARMUP_STEPS
        group = list(itertools.islice(batches, WARMUP_STEPS - done if warming
                                      else min(block, target - done)))
        if not group:
            break
        for name, run_steps in timers.items():
            seconds = run_steps(group)
            if steps == 0 or done >= WARMUP_STEPS:
                durations[name].extend([seconds / len(group)] * len(group))
        done += len(group)
    measurements = _step_measurements(durations["run"], steps, n_batches, config,
                                      prepared.data.num_items)
    if config.distill is not None:
        measurements["distillation"] = objectives["run"].end_epoch()
    if "teacher" in objectives:
        measurements["teacher"] = _step_measurements(durations["teacher"], steps, n_batches,
                                                     config, prepared.data.num_items)
        measurements["cost_vs_teacher"] = (measurements["median_step_seconds"]
                                           / measurements["teacher"]["median_step_seconds"])
    tag = (f"{config.backbone}-{config.compressor}{_options_tag(config)}"
           f"{'-kd' if config.distill else ''}-d{config.dim}-{config.precision}")
    if device.type != "cpu":
        tag += f"-{device.type}"
    return _write_record("train", config, prepared.data.name, measurements, threads, tag,
                         results_dir, device=describe_device(device))


def reference_teacher(config: RunConfig) -> RunConfig:
    """The paper's teacher at `config`'s data and general settings: SASRec (with the dataset's
    preset options) over the full table, the yardstick of every training cost."""
    teacher = teacher_config(config)
    if teacher.backbone == "sasrec":
        return teacher
    return dataclasses.replace(teacher, backbone="sasrec",
                               backbone_options=backbone_preset(config.data, "sasrec"))


def step_timer(objective: Any, config: RunConfig, device: torch.device = torch.device("cpu")
               ) -> Callable[[list[Batch]], float]:
    """A function that runs training steps of `objective` on `device`, one per batch given,
    and returns their seconds (the device's queue drained at both ends)."""
    model = objective.module.to(device)
    objective.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.l2, fused=True)
    model.train()
    objective.start_epoch(1)

    def run_steps(batches: list[Batch]) -> float:
        synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            loss = objective.loss(batch, config.precision)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        return time.perf_counter() - start

    return run_steps


def _step_measurements(durations: list[float], steps: int, n_batches: int, config: RunConfig,
                       num_items: int) -> dict[str, Any]:
    step = float(np.median(durations))
    gflop = 6 * config.batch_size * num_items * config.dim / 1e9
    return {
        "median_step_seconds": step,
        "p90_step_seconds": float(np.percentile(durations, 90)),
        "pairs_per_second": config.batch_size / step,
        "seconds_per_epoch": float(np.sum(durations)) if steps == 0 else step * n_batches,
        "batches_per_epoch": n_batches,
        "timed_steps": len(durations),
        "softmax_gflop_per_step": gflop,
        "softmax_gflops_achieved": gflop / step,
    }


def training_objective(config: RunConfig, prepared: Prepared) -> Any:
    """What a training step of `config` optimises, at its real shapes; for timing only, a
    student starts from a random teacher table (weights do not change the cost of a step)."""
    model = build_model(config, prepared.data.num_items)
    if config.distill is None:
        return SupervisedObjective(model)
    if model.compressor.uses_teacher():
        model.compressor.init_from_table(torch.randn(prepared.data.num_items, config.dim) * 0.1)
    teacher = build_model(teacher_config(config), prepared.data.num_items)
    pair = DistillationPair(teacher, model, DistillConfig(**config.distill))
    return DistillationObjective(pair, torch.from_numpy(prepared.hot_items), config.epochs)


def _timings(fn, repeats: int, warmup: int = 10) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


@restores_cpu_settings
@torch.no_grad()
def benchmark_scoring(config: RunConfig, *, data_root: str | None, threads: int, repeats: int,
                      batches: tuple[int, ...], results_dir: Path,
                      model_file: Path | None = None) -> tuple[dict[str, Any], Path]:
    """Compressor scoring in its deployed form against dense `query @ table.T`, same process.

    The item table comes from `model_file` (a trained run's model) or, for timing alone, from
    the compressor's own initialisation (a random teacher table for students).
    """
    configure_cpu(threads)
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, data_root)
    model = build_model(config, data.num_items).eval()
    compressor = model.compressor
    if model_file is not None:
        model.load_state_dict(load_weights(model_file))
    elif compressor.uses_teacher():
        compressor.init_from_table(torch.randn(data.num_items, config.dim) * 0.1)
    compressor.deploy()
    table = compressor.weight().detach().contiguous()
    measurements: dict[str, Any] = {}
    for batch in batches:
        query = torch.randn(batch, config.dim)
        dense = _timings(lambda: query @ table.T, repeats)
        fast = _timings(lambda: compressor.score(query), repeats)
        exact, approx = query @ table.T, compressor.score(query)
        measurements[f"batch_{batch}"] = {
            "dense_median_ms": 1e3 * float(np.median(dense)),
            "dense_p90_ms": 1e3 * float(np.percentile(dense, 90)),
            "compressor_median_ms": 1e3 * float(np.median(fast)),
            "compressor_p90_ms": 1e3 * float(np.percentile(fast, 90)),
            "speedup": float(np.median(dense) / np.median(fast)),
            "max_abs_difference": float((exact - approx).abs().max()),
            "top20_identical": bool(torch.equal(exact[:, 1:].topk(20).indices,
                                                approx[:, 1:].topk(20).indices)),
        }
    return _write_record("score", config, data.name, measurements, threads,
                         f"{config.compressor}{_options_tag(config)}", results_dir,
                         model_file=str(model_file) if model_file else None, repeats=repeats)


def _write_record(kind: str, config: RunConfig, dataset: str, measurements: dict[str, Any],
                  threads: int, tag: str, results_dir: Path, **extra: Any
                  ) -> tuple[dict[str, Any], Path]:
    """Store a benchmark's record as RESULTS/bench/{kind}-{data}-{tag}-t{threads}.json."""
    result = {"benchmark": kind, "config": config.to_dict(), "dataset": dataset, **extra,
              "measurements": measurements, "provenance": provenance(threads), "date": now_iso()}
    path = (Path(results_dir) / "bench"
            / f"{kind}-{Path(config.data).name}-{tag}-t{threads}.json")
    write_json(path, result)
    return result, path


def _options_tag(config: RunConfig) -> str:
    """The compressor's non-default options for a file name, e.g. "-K256-M3"; "" if none."""
    options = "-".join(f"{k}{v}" for k, v in config.compressor_options.items())
    return "-" + options if options else ""


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@restores_cpu_settings
def benchmark_memory(config: RunConfig, *, data_root: str | None, steps: int,
                     results_dir: Path, dataset: Any = None) -> tuple[dict[str, Any], Path]:
    """Peak memory of a run's phases, in order, in one process: the data prepared, `steps`
    training steps, then a full-ranking evaluation of the whole test set. Evaluation is
    bounded by its chunk of test cases (`eval_batch_size`), not by the test set, so its peak
    should stay near training's."""
    configure_cpu(1)
    torch.manual_seed(config.seed)
    data = dataset if dataset is not None else load_dataset(config.data, data_root)
    prepared = prepare(config, data)
    peaks = {"data": peak_rss_mb()}
    objective = SupervisedObjective(build_model(config, data.num_items))
    run_steps = step_timer(objective, config)
    for _, batch in zip(range(steps), prepared.fit.batches(config.batch_size, config.max_len)):
        run_steps([batch])
    peaks["training"] = peak_rss_mb()
    started = time.perf_counter()
    evaluate_ranks(objective.module, prepared.test, config.max_len)
    peaks["evaluation"] = peak_rss_mb()
    measurements = {
        "peak_mb": peaks, "evaluation_over_training": peaks["evaluation"] / peaks["training"],
        "evaluation_seconds": time.perf_counter() - started, "training_steps": steps,
        "test_cases": len(prepared.test), "num_items": data.num_items,
        "eval_batch_size": eval_batch_size(data.num_items)}
    return _write_record("memory", config, data.name, measurements, 1,
                         f"{config.backbone}-{config.compressor}-d{config.dim}", results_dir)
