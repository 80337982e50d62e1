"""Device choice and mixed precision: CUDA (fp16 or bf16), MPS, and bf16 on CPUs that have it natively."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import torch

from comp.errors import CompError

# Instructions that make bf16 fast on a CPU (x86: AVX512-BF16, AMX; Arm: FEAT_BF16); without them
# bf16 is emulated and slower than fp32.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an unavailable device is an error, not a silent fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CompError(f"Unknown train.device '{name}'.", hint="Use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompError(f"train.device={name} but CUDA is not available here.", hint="Use --set train.device=cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CompError(f"train.device={name} but only {torch.cuda.device_count()} GPU(s) are visible.")
    return device


def usable_cpu_count() -> int:
    """Cores this process may run on (a container's cpuset), not the host's total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def read_cpuinfo() -> str | None:
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="replace") if path.exists() else None


def cpu_bf16_flags(cpuinfo: str | None) -> list[str] | None:
    """The native-bf16 instruction flags in /proc/cpuinfo text; None where there is no such file (macOS)."""
    if cpuinfo is None:
        return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def cpu_has_native_bf16() -> bool:
    """bf16 pays on CPUs with AVX512-BF16 or AMX; elsewhere it is emulated and slower than fp32."""
    return bool(cpu_bf16_flags(read_cpuinfo()))


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for this device, or None for full precision."""
    if not enabled:
        return None
    if device.type == "cuda":
        # Below Ampere bf16 is emulated (no bf16 convolutions in cuDNN): fp16 with a grad scaler there.
        native_bf16 = torch.cuda.get_device_capability(device)[0] >= 8
        return torch.bfloat16 if native_bf16 else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def model_memory_format(channels_last: bool) -> torch.memory_format:
    """train.channels_last as the format the model and its batches take, in training and prediction alike."""
    return torch.channels_last if channels_last else torch.contiguous_format


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def default_num_workers(device: torch.device) -> int:
    """With few cores, DataLoader workers compete with torch's own threads rather than help."""
    cores = usable_cpu_count()
    if cores <= 2:
        return 0
    return min(8, cores - 1 if device.type == "cpu" else cores)
