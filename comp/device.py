"""Device choice and mixed precision: CUDA (fp16 or bf16), MPS, and bf16 on CPUs that have it natively."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
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
    """train.channels_last (resolved) as the format the model and its batches take, in training and prediction."""
    return torch.channels_last if channels_last else torch.contiguous_format


# ----------------------------------------------------------------------------- train.amp / train.channels_last: auto


@dataclass(frozen=True)
class NumericFormat:
    """The precision and memory format a model trains and predicts in, and why."""

    dtype: torch.dtype | None  # the autocast dtype; None: fp32
    memory_format: torch.memory_format
    reason: str

    def record(self) -> dict[str, str]:
        return {
            "precision": dtype_name(self.dtype) or "float32",
            "memory_format": "channels_last" if self.memory_format == torch.channels_last else "contiguous",
            "reason": self.reason,
        }


def numeric_format(
    amp: bool | str, channels_last: bool | str, model: torch.nn.Module, device: torch.device, image_size: int
) -> NumericFormat:
    """train.amp and train.channels_last as set, or, for `auto`, the fastest format measured for this kind of
    model on this kind of device (README, Speed):

    - precision: bf16 on CUDA from Ampere on, fp16 with a grad scaler below; bf16 on CPUs with native bf16
      (resnet18 at 32 px: 1.32x fp32, resnet9_tiny at 28 px: 2.0x), except for a model whose strided
      convolution sees a 1-pixel map, where oneDNN's bf16 backward (torch 2.13, 2.14) writes inf or nan into
      the taps that see only padding (resnet101 at 16 px: 10 of 30 steps); fp32 elsewhere.
    - memory format: channels_last for a convolutional model (convolution weights are most of its
      parameters) on a device with NHWC convolution kernels (CUDA, and CPUs: resnet18 1.11x, resnet9_tiny
      1.0x); contiguous otherwise.
    """
    reasons = []
    if amp == "auto":
        dtype, why = auto_precision(model, device, image_size)
        reasons.append(why)
    else:
        dtype = amp_dtype(device, amp)
    if channels_last == "auto":
        channels_last = convolutional(model) and device.type in ("cuda", "cpu") and channels_last_kept(device)
        reasons.append(f"channels_last {'on' if channels_last else 'off'} (auto)")
    return NumericFormat(dtype, model_memory_format(channels_last), "; ".join(reasons) or "as set")


def convolutional(model: torch.nn.Module) -> bool:
    """Whether convolution weights hold most of the model's parameters (a ResNet, not a ViT with a conv stem)."""
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return conv > sum(p.numel() for p in model.parameters()) / 2


def auto_precision(model: torch.nn.Module, device: torch.device, image_size: int) -> tuple[torch.dtype | None, str]:
    if device.type == "cuda":
        dtype = amp_dtype(device, True)
        return dtype, f"{dtype_name(dtype)} autocast (auto, CUDA)"
    if device.type != "cpu" or not cpu_has_native_bf16():
        return None, "fp32 (auto: no native bf16 on this device)"
    unsafe = strided_convolution_on_one_pixel(model, image_size)
    if unsafe:
        return None, f"fp32 (auto: {unsafe} sees a 1-pixel map, where CPU bf16 backward is unreliable)"
    return torch.bfloat16, "bfloat16 autocast (auto, native bf16 CPU)"


def strided_convolution_on_one_pixel(model: torch.nn.Module, image_size: int) -> str | None:
    """The name of the first convolution with stride > 1 and a kernel > 1 whose input is 1 pixel high or wide at
    this image size (one forward pass of a blank image on the CPU), or None."""
    found: list[str] = []
    names = {module: name for name, module in model.named_modules()}

    def look(module: torch.nn.Conv2d, inputs, _output) -> None:
        strided = max(module.stride) > 1 and max(module.kernel_size) > 1
        if strided and min(inputs[0].shape[-2:]) == 1 and not found:
            found.append(names[module])

    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convolutions:
        return None
    hooks = [conv.register_forward_hook(look) for conv in convolutions]
    training, weight = model.training, convolutions[0].weight
    try:
        model.eval()
        with torch.no_grad():
            blank = torch.zeros(1, convolutions[0].in_channels, image_size, image_size)
            model(blank.to(weight.device, weight.dtype))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return found[0] if found else None


def channels_last_kept(device: torch.device) -> bool:
    """Whether a convolution on this device keeps the channels_last layout, i.e. has NHWC kernels."""
    conv = torch.nn.Conv2d(3, 8, 3).to(device)
    x = torch.zeros(2, 3, 8, 8, device=device).to(memory_format=torch.channels_last)
    with torch.no_grad():
        return conv(x).is_contiguous(memory_format=torch.channels_last)


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def default_num_workers(device: torch.device) -> int:
    """With few cores, DataLoader workers compete with torch's own threads rather than help."""
    cores = usable_cpu_count()
    if cores <= 2:
        return 0
    return min(8, cores - 1 if device.type == "cpu" else cores)
