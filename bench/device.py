"""Where a run computes: `--device auto|cpu|cuda|cuda:N`, what that device is (for the record's
provenance), autocast by device type, and the random state a checkpoint keeps for it.

The device never enters a run's key: the same configuration trained on a GPU or on the CPU is
the same experiment (the records say where each ran). Latency benchmarks ignore it and stay on
one CPU thread, as a phone runs.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from typing import Any

import torch

from ecbench.bench.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """`--device`: auto (the first CUDA device when there is one, else the CPU), cpu, cuda or
    cuda:N. A CUDA device this machine lacks is one line of error, before anything runs."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ConfigError(f"--device must be {DEVICE_CHOICES}, got {spec!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: this machine has no CUDA device that torch can use "
                          f"(torch {torch.__version__}, built for CUDA "
                          f"{torch.version.cuda or 'none'}); use --device cpu")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"--device {spec}: this machine has {count} CUDA device(s), "
                          f"cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def cuda_count() -> int:
    """CUDA devices torch can use here (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe_device(device: torch.device) -> dict[str, Any]:
    """The device a run used, for its provenance: on CUDA its name, memory, compute
    capability, and the CUDA runtime and driver versions."""
    if device.type != "cuda":
        return {"type": device.type}
    props = torch.cuda.get_device_properties(device)
    return {"type": "cuda", "index": device.index, "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda_runtime": torch.version.cuda, "driver": _driver_version()}


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device`'s type when `precision` is bf16; otherwise nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work (a no-op on the CPU), before reading a host clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random state a checkpoint keeps: the CPU generator's, and `device`'s own on CUDA
    (dropout masks and Gumbel noise are drawn there)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor] | torch.Tensor, device: torch.device) -> None:
    """Restore `rng_state`'s output (or an older checkpoint's CPU state alone). A checkpoint
    written on CUDA resumes on the CPU with its CPU state, and the other way round with a
    freshly seeded device generator: the run continues, its noise no longer bit-identical."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)

