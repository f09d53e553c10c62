"""`--device` on any machine: its choices and errors, the batches a device is given, the loss
read back, checkpoints' random state, and the sweep's GPU slots (the CUDA runs themselves are
in test_gpu.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ecbench.bench import sweep
from ecbench.bench.data.batching import Examples
from ecbench.bench.data.sessions import Sessions
from ecbench.bench.device import describe_device, resolve_device, rng_state, set_rng_state
from ecbench.bench.errors import ConfigError
from ecbench.bench.sweep import LocalConfig, LocalExecutor, device_slots
from helpers import random_sessions


def test_auto_and_cpu_resolve_and_a_missing_gpu_is_one_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "tpu", ""):
        with pytest.raises(ConfigError, match="--device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    assert describe_device(torch.device("cpu")) == {"type": "cpu"}


def _reference_batch(examples: Examples, index: np.ndarray, max_len: int):
    """The padded batch written out with plain Python loops, as the reference."""
    rows = [examples.items[examples.starts[i]:examples.ends[i]][-max_len:].tolist()
            for i in index]
    width = max(len(r) for r in rows)
    return ([r + [0] * (width - len(r)) for r in rows], [len(r) for r in rows],
            examples.targets[index].tolist())


def test_batches_in_any_order_equal_the_loop_reference():
    rng = np.random.default_rng(3)
    sessions = Sessions.from_lists(random_sessions(rng, 300, max_len=30, num_items=50, min_len=2))
    examples = Examples.from_sessions(sessions)
    order = rng.permutation(len(examples))
    batches = list(examples.batches(64, 12, order))
    assert sum(len(b.targets) for b in batches) == len(examples)
    for lo, batch in zip(range(0, len(order), 64), batches):
        items, lengths, targets = _reference_batch(examples, order[lo:lo + 64], 12)
        assert batch.items.tolist() == items and batch.lengths.tolist() == lengths
        assert batch.targets.tolist() == targets and batch.items.dtype == torch.int64
    assert list(examples.batches(64, 12, np.zeros(0, dtype=np.int64))) == []


def test_a_checkpoints_random_state_restores_and_old_ones_still_load():
    torch.manual_seed(5)
    state = rng_state(torch.device("cpu"))
    first = torch.rand(3)
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), first)
    set_rng_state(state["cpu"], torch.device("cpu"))  # a checkpoint from before --device
    assert torch.equal(torch.rand(3), first)


def test_gpu_slots_pack_runs_per_gpu_and_the_cpu_has_none():
    assert device_slots("cuda:0,cuda:1", 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert device_slots("cpu", 3) == []
    with pytest.raises(ValueError, match="--runs-per-gpu"):
        LocalConfig(runs_per_gpu=0)


def test_the_local_executor_never_puts_more_runs_on_a_gpu_than_asked(monkeypatch, tmp_path):
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    lock = threading.Lock()

    def fake_run_job(index: int, args: tuple[str, ...], logs: Path) -> sweep.JobResult:
        device = args[args.index("--device") + 1]
        with lock:
            running[device] = running.get(device, 0) + 1
            peak[device] = max(peak.get(device, 0), running[device])
        time.sleep(0.05)
        with lock:
            running[device] -= 1
        return sweep.JobResult(args, 0, 0.05, logs / f"{index}.log", None)

    monkeypatch.setattr(sweep, "run_job", fake_run_job)
    executor = LocalExecutor(LocalConfig(devices="cuda:0,cuda:1", runs_per_gpu=3))
    assert executor.workers == 6
    results = executor.run_all([("--seed", str(i)) for i in range(20)], logs=tmp_path,
                               on_done=lambda r: None)
    assert len(results) == 20 and peak == {"cuda:0": 3, "cuda:1": 3}
    assert [r.args[:2] for r in results] == [("--seed", str(i)) for i in range(20)]
