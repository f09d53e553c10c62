"""Shared fixtures: the repository and real-data locations, tiny data, temporary folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecbench.bench.data.loaders import load_standard
from ecbench.bench.data.sessions import SessionDataset
from ecbench.bench.data.synthetic import SyntheticConfig, synthetic_dataset
from helpers import write_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TINY_SYNTHETIC = SyntheticConfig(num_items=300, num_topics=10, num_sessions=1500, seed=7)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The test machine has 2 cores shared with other work; keep torch to one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real datasets not found at {DATA_ROOT} (expected ../shared/datasets "
                    "next to the repository)")
    return DATA_ROOT


def _dataset_folder(data_root: Path, name: str) -> Path:
    folder = data_root / name
    if not folder.is_dir():
        pytest.skip(f"dataset {name!r} not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def tmall_folder(data_root: Path) -> Path:
    return _dataset_folder(data_root, "tmall")


@pytest.fixture(scope="session")
def tmall(tmall_folder: Path) -> SessionDataset:
    return load_standard(tmall_folder)


@pytest.fixture(scope="session")
def tmall_slice(tmall) -> SessionDataset:
    """The first 3000 real Tmall training sessions, and the test cases they can score."""
    train = tmall.train.select(np.arange(3000))
    num_items = int(train.items.max()) + 1
    seen = np.zeros(num_items, dtype=bool)
    seen[train.items] = True
    prefixes, labels = tmall.test_prefixes, tmall.test_labels
    keep = [i for i in range(len(prefixes))
            if labels[i] < num_items and seen[labels[i]] and prefixes.session(i).max() < num_items]
    return SessionDataset("tmall-first-3000", num_items, train, prefixes.select(np.array(keep)),
                          labels[keep], checksum="tmall-first-3000")


@pytest.fixture(scope="session")
def tiny_synthetic() -> SessionDataset:
    return synthetic_dataset(TINY_SYNTHETIC)


@pytest.fixture
def workdirs(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh results folder and work folder for one CLI run."""
    results, work = tmp_path / "results", tmp_path / "work"
    return results, work


@pytest.fixture
def make_dataset(tmp_path: Path):
    """`make_dataset(name, train, test, ...)` writes a dataset folder under tmp_path."""
    def make(name: str, train=None, test=None, **raw) -> Path:
        return write_dataset(tmp_path / "datasets" / name, train, test, **raw)
    return make
