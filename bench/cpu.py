"""Process-wide CPU settings shared by every run and benchmark."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

from ecbench.bench.errors import ConfigError

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and keep them after `free`.

    Each training step allocates and frees tensors the size of the item table (38 MB for
    RetailRocket at dim 256). glibc maps blocks over 32 MB fresh from the kernel every time, and
    touching those new pages cost about 20% of a step. Returns False where glibc is absent.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))  # an int: the largest it takes
    except (OSError, AttributeError):
        return False


def _bound_onednn_cache(capacity: int = 8) -> None:
    """Keep oneDNN's primitive cache small.

    Packed batches give nearly every step new matrix shapes, and oneDNN caches a compiled
    primitive per shape: with its default capacity a RetailRocket run grew past 20 GB. oneDNN
    reads the variable when it creates its first primitive, so this must run before any work.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def configure_cpu(threads: int) -> None:
    """Threads, denormals and memory reuse for CPU training and timing.

    Flushing denormals matters: the softmax gradient of a large catalogue is full of tiny values,
    and denormal arithmetic made the table's gradient matmul ten times slower.
    """
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    _keep_freed_memory()
    _bound_onednn_cache()
