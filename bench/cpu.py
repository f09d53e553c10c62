"""CPU settings shared by every run and benchmark.

The thread count and denormal flushing that `configure_cpu` sets are per-process (per-thread
for flushing) state; every public entry point that sets them is wrapped in
`restores_cpu_settings`, so a library call leaves its caller's arithmetic as it found it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
import time
from typing import Callable, Iterator, TypeVar

import torch

from ecbench.bench.errors import ConfigError

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


_keeping_freed_memory = False


def _keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and keep them after `free`.

    Each training step allocates and frees tensors the size of the item table (38 MB for
    RetailRocket at dim 256). glibc maps blocks over 32 MB fresh from the kernel every time, and
    touching those new pages cost about 20% of a step. Returns False where glibc is absent.
    """
    global _keeping_freed_memory
    libc = _libc()
    try:
        _keeping_freed_memory = libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))  # an int: the largest it takes
    except AttributeError:
        _keeping_freed_memory = False
    return _keeping_freed_memory


_M_MMAP_THRESHOLD = -3
_DEFAULT_MMAP_MAX = 65536
EVAL_MMAP_THRESHOLD = 2**20


@contextlib.contextmanager
def large_blocks_mapped(threshold: int = EVAL_MMAP_THRESHOLD) -> Iterator[None]:
    """Within this block, glibc maps blocks over `threshold` fresh and returns them on free.

    Training keeps freed memory (`_keep_freed_memory`), which is right for its steps of equal
    shapes, but an evaluation pass interleaves [B, num_items] scores and masks with the small
    tensors it keeps, each of which splits a freed block, so the heap grew with every batch
    scored (`ecbench bench memory` records the peaks). Every block of a megabyte or more (a
    batch's scores and masks) is mapped while evaluating. Restored after.
    """
    libc = _libc() if _keeping_freed_memory else None
    if libc is None:  # glibc's own defaults already map large blocks
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, 0)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _bound_onednn_cache(capacity: int = 8) -> None:
    """Keep oneDNN's primitive cache small.

    Packed batches give nearly every step new matrix shapes, and oneDNN caches a compiled
    primitive per shape: with its default capacity a RetailRocket run grew past 20 GB. oneDNN
    reads the variable when it creates its first primitive, so this must run before any work.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


AUTO_THREADS_CAP = 2  # small models at batch 100 gain little from more threads


def busy_cores(sample_seconds: float = 0.3) -> float:
    """How many cores other work keeps busy now: the non-idle share of all cores over a short
    sample of /proc/stat (the 1-minute load average where that is missing, which lags)."""
    def counters() -> tuple[int, int]:
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait

    try:
        total0, idle0 = counters()
        time.sleep(sample_seconds)
        total1, idle1 = counters()
    except (OSError, ValueError, IndexError):
        return float(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    if total1 <= total0:
        return 0.0
    return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def auto_threads(cap: int = AUTO_THREADS_CAP) -> int:
    """Threads for a run: the cores left idle by other work, at least 1, at most `cap`.

    torch's threads wait for each other at every operation, so one that shares its core with
    another busy process stalls them all (`ecbench bench threads` measures how much)."""
    idle = (os.cpu_count() or 1) - busy_cores()
    return max(1, min(cap, int(idle + 0.5)))


def resolve_threads(threads: int | str) -> int:
    """`--threads`: a positive number, or "auto" (`auto_threads`)."""
    if threads == "auto":
        return auto_threads()
    try:
        count = int(threads)
    except (TypeError, ValueError):
        raise ConfigError(f"--threads must be a positive number or auto, got {threads!r}"
                          ) from None
    if count < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    return count


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


def flushes_denormals() -> bool:
    """Whether this thread's arithmetic flushes subnormal numbers to zero."""
    return sys.float_info.min / 2 == 0.0


@contextlib.contextmanager
def cpu_settings_restored() -> Iterator[None]:
    """Within the block `configure_cpu` may change the thread count and denormal flushing; both
    are put back after. Flushed subnormals break IEEE-754 code elsewhere in the caller's process
    (a property-based test's float strategy refuses to run, for one)."""
    threads, flushing = torch.get_num_threads(), flushes_denormals()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushing)


_Function = TypeVar("_Function", bound=Callable)


def restores_cpu_settings(function: _Function) -> _Function:
    """`function` runs inside `cpu_settings_restored`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with cpu_settings_restored():
            return function(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or None."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
