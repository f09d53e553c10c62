"""Benchmarks of the hot paths whose results are stored as records (not timed tests)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.config import RunConfig
from bench.records import atomic_write_bytes, now_iso, provenance
from bench.train import build_model, configure_cpu, load_dataset, prepare, training_loss

WARMUP_STEPS = 20


def benchmark_training(config: RunConfig, *, data_root: str | None, steps: int, threads: int,
                       results_dir: Path) -> tuple[dict[str, Any], Path]:
    """Time training steps (batch building, forward, full softmax, backward, Adam) at `config`.

    With `steps == 0` one whole epoch is timed; otherwise `steps` steps after a warm-up, and the
    epoch time is extrapolated from the median step.
    """
    import json

    configure_cpu(threads)
    torch.manual_seed(config.seed)
    prepared = prepare(config, load_dataset(config.data, data_root))
    model = build_model(config, prepared.data.num_items)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2, fused=True)
    model.train()
    fit = prepared.fit
    order = np.random.default_rng(config.seed).permutation(len(fit))
    n_batches = fit.num_batches(config.batch_size)
    timed = n_batches if steps == 0 else min(steps, n_batches - WARMUP_STEPS)
    durations = []
    for i, batch in enumerate(fit.batches(config.batch_size, config.max_len, order)):
        if i >= WARMUP_STEPS + timed and steps:
            break
        start = time.perf_counter()
        loss = training_loss(model, batch, config.precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if steps == 0 or i >= WARMUP_STEPS:
            durations.append(time.perf_counter() - start)
    step = float(np.median(durations))
    epoch_seconds = float(np.sum(durations)) if steps == 0 else step * n_batches
    measurements = {
        "median_step_seconds": step,
        "p90_step_seconds": float(np.percentile(durations, 90)),
        "pairs_per_second": config.batch_size / step,
        "seconds_per_epoch": epoch_seconds,
        "batches_per_epoch": n_batches,
        "timed_steps": len(durations),
        "softmax_gflop_per_step": 6 * config.batch_size * prepared.data.num_items * config.dim / 1e9,
    }
    measurements["softmax_gflops_achieved"] = measurements["softmax_gflop_per_step"] / step
    result = {"benchmark": "train", "config": config.to_dict(), "dataset": prepared.data.name,
              "measurements": measurements, "provenance": provenance(threads),
              "date": now_iso()}
    name = Path(config.data).name
    path = (Path(results_dir) / "bench" /
            f"train-{name}-{config.compressor}-d{config.dim}-{config.precision}-t{threads}.json")
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
    return result, path
