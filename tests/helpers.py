"""Helpers shared by the test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch


def write_dataset(folder: Path, train=None, test=None, *, train_bytes: bytes | None = None,
                  test_bytes: bytes | None = None) -> Path:
    """A dataset folder in the standard layout, from plain lists or from raw pickle bytes.

    Passing neither the object nor the bytes for a file leaves that file out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj, raw in (("all_train_seq.txt", train, train_bytes),
                           ("test.txt", test, test_bytes)):
        if raw is None and obj is not None:
            raw = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        if raw is not None:
            (folder / name).write_bytes(raw)
    return folder


# A small valid dataset: ids 1..6, every test label seen in training.
GOOD_TRAIN = [[1, 2, 3], [2, 3, 4, 5], [5, 6, 1], [3, 4], [6, 5, 4, 3]]
GOOD_TEST = ([[1, 2], [3], [6, 5]], [3, 4, 4])


def ecbench_command() -> list[str]:
    exe = shutil.which("ecbench") or str(Path(sys.executable).with_name("ecbench"))
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-m", "ecbench.bench.cli"]


def run_cli(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ECBENCH_DATA"}
    return subprocess.run(ecbench_command() + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def records_under(results: Path) -> list[Path]:
    return sorted((results / "runs").glob("*.json")) if results.exists() else []


def sessions_as_lists(sessions) -> list[list[int]]:
    return [sessions.session(i).tolist() for i in range(len(sessions))]


def random_sessions(rng: np.random.Generator, n: int, max_len: int = 12, num_items: int = 30,
                    min_len: int = 1) -> list[list[int]]:
    return [rng.integers(1, num_items, size=rng.integers(min_len, max_len + 1)).tolist()
            for _ in range(n)]


def assert_same_top_k(run, deployed, item_seq: torch.Tensor, lengths: torch.Tensor) -> None:
    """An exported runner (`ecbench.bench.deploy.export.load`) gives the eager deployed model's top-K."""
    with torch.no_grad():
        values, items = run(item_seq, lengths)
        expected = deployed(item_seq, lengths)
    torch.testing.assert_close(torch.as_tensor(values), expected[0], atol=1e-4, rtol=0)
    assert torch.equal(torch.as_tensor(items).long(), expected[1])


def padded(rows: list[list[int]], width: int | None = None) -> torch.Tensor:
    """Sessions as a left-aligned, zero-padded [B, width] batch."""
    width = width or max(map(len, rows))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])
