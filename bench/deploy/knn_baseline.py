"""A session-kNN reference run: the whole test set scored by full ranking (ties against it),
the bytes a phone stores for it, and its batch-1 latency beside the dense-table SASRec's in
the same process; written as a record under RESULTS/baselines."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ecbench.bench.cpu import configure_cpu, restores_cpu_settings
from ecbench.bench.data.sessions import SessionDataset
from ecbench.bench.evaluation.metrics import (metrics_from_ranks, pessimistic_ranks,
                                              tied_with_another)
from ecbench.bench.evaluation.session_knn import KNNConfig, SessionKNN, knn_scores_torch
from ecbench.bench.records import ensure_writable, now_iso, provenance, write_json
from ecbench.bench.training.config import RunConfig, backbone_preset, preset_for
from ecbench.compressors.base import FLOAT_BYTES

SCHEMA = "ecbench.knn/1"
SCORE_BATCH = 256  # test cases scored at once: a [B, items] float32 matrix each


def dense_sasrec(data: SessionDataset) -> RunConfig:
    """The dense-table SASRec of `data`'s presets (its width and encoder): what session-kNN's
    bytes and latency are compared with."""
    preset = preset_for(data.name)
    return RunConfig(data=data.name, dim=preset.get("dim", RunConfig.dim),
                     backbone_options=backbone_preset(data.name, "sasrec"))


def knn_key(config: KNNConfig, checksum: str) -> str:
    payload = json.dumps({"schema": SCHEMA, "config": dataclasses.asdict(config),
                          "data": checksum}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def evaluate_knn(knn: SessionKNN, data: SessionDataset) -> tuple[dict[str, float], float]:
    """Full-ranking test metrics and the share of labels tied with another item (%)."""
    ranks, tied = [], []
    n = len(data.test_labels)
    for lo in range(0, n, SCORE_BATCH):
        index = np.arange(lo, min(n, lo + SCORE_BATCH))
        scores = knn_scores_torch(knn, data.test_prefixes.select(index))
        targets = torch.from_numpy(data.test_labels[index])
        ranks.append(pessimistic_ranks(scores, targets).numpy())
        tied.append(tied_with_another(scores, targets).numpy())
    return metrics_from_ranks(np.concatenate(ranks)), 100.0 * float(np.concatenate(tied).mean())


def batch1_latency(knn: SessionKNN, data: SessionDataset, repeats: int, seed: int = 0
                   ) -> dict[str, Any]:
    """Median and p90 milliseconds of one session scored and its top 10 taken, over `repeats`
    test sessions, beside the dense-table SASRec (untrained, its deployed shape) on the same
    sessions, the two taking turns."""
    from ecbench.bench.deploy.recommender import DeployedRecommender, deployable_model

    model = deployable_model(dense_sasrec(data), data.num_items, None)
    dense = DeployedRecommender(model, k=10).eval()
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data.test_labels), size=repeats, replace=repeats > len(data.test_labels))
    knn_seconds, dense_seconds = [], []

    def timed(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    with torch.no_grad():
        for i in picks:
            prefix = data.test_prefixes.select(np.array([i]))
            items = torch.from_numpy(prefix.items[-model.max_len:]).view(1, -1)
            lengths = torch.tensor([items.shape[1]])
            knn_seconds.append(timed(lambda: knn_scores_torch(knn, prefix)[:, 1:].topk(10)))
            dense_seconds.append(timed(lambda: dense(items, lengths)))
    knn_ms, dense_ms = 1e3 * np.median(knn_seconds), 1e3 * np.median(dense_seconds)
    return {"median_ms": float(knn_ms), "p90_ms": float(1e3 * np.percentile(knn_seconds, 90)),
            "repeats": repeats, "dense_sasrec_median_ms": float(dense_ms),
            "ratio_to_dense_sasrec": float(knn_ms / dense_ms)}


@restores_cpu_settings
def run_knn(config: KNNConfig, data: SessionDataset, *, results_dir: Path, threads: int,
            latency_repeats: int = 300, log: Callable[[str], None] = print
            ) -> tuple[dict[str, Any], Path]:
    """Fit, test and time a session-kNN on `data`; its record's path."""
    ensure_writable(Path(results_dir) / "baselines")
    configure_cpu(threads)
    started = now_iso()
    origin = provenance(threads)
    t0 = time.perf_counter()
    knn = SessionKNN(data.train, data.num_items, config)
    fit_seconds = time.perf_counter() - t0
    log(f"{config.method}: {len(data.train):,} past sessions indexed in {fit_seconds:.1f}s; "
        f"scoring {len(data.test_labels):,} test cases")
    t0 = time.perf_counter()
    test, tied = evaluate_knn(knn, data)
    test_seconds = time.perf_counter() - t0
    stored = knn.stored()
    total = sum(t.nbytes for t in stored)
    reference_dim = dense_sasrec(data).dim
    full = data.num_items * reference_dim * FLOAT_BYTES
    key = knn_key(config, data.checksum)
    record = {
        "schema": SCHEMA, "key": key, "method": config.method,
        "config": dataclasses.asdict(config),
        "dataset": {"name": data.name, "checksum": data.checksum, "num_items": data.num_items,
                    "past_sessions": len(data.train), "test_cases": len(data.test_labels)},
        "test": test, "test_tied_percent": tied,
        "storage": {"tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                                 "bytes": t.nbytes} for t in stored],
                    "total_bytes": total, "full_bytes": full, "full_dim": reference_dim,
                    "byte_ratio": full / total,
                    "notes": ["every training session is kept (no validation split: "
                              "nothing is selected)"]},
        "timing": {"fit_seconds": fit_seconds, "test_seconds": test_seconds,
                   "batch1": batch1_latency(knn, data, latency_repeats)},
        "provenance": origin, "started": started, "finished": now_iso(),
    }
    path = Path(results_dir) / "baselines" / f"{data.name}-{config.method}-{key}.json"
    write_json(path, record)
    return record, path
