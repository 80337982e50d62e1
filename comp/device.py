"""Device choice and mixed precision: CUDA (fp16 or bf16), MPS, and bf16 on CPUs that have it natively."""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from comp.errors import CompError


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


def cpu_has_native_bf16() -> bool:
    """bf16 pays on CPUs with AVX512-BF16 or AMX; elsewhere it is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for this device, or None for full precision."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def default_num_workers(device: torch.device) -> int:
    """With few cores, DataLoader workers compete with torch's own threads rather than help."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores <= 2:
        return 0
    return min(8, cores - 1 if device.type == "cpu" else cores)
