"""`comp env`: the software and hardware facts a bug report needs, as JSON and as a rich table."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
from rich.markup import escape
from rich.table import Table

from comp import __version__
from comp.device import amp_dtype, channels_last_kept, cpu_bf16_flags, dtype_name, read_cpuinfo, usable_cpu_count

# What comp runs on, by the name comp env shows -> the distributions that install it (the first found counts).
PACKAGES = {
    "torchvision": ("torchvision",),
    "timm": ("timm",),
    "albumentations": ("albumentations",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    "kaggle": ("kaggle",),
    "wandb": ("wandb",),  # train.loggers
    "mlflow": ("mlflow-skinny", "mlflow"),
}


@dataclass
class Environment:
    facts: dict[str, Any]  # JSON-ready

    def to_json(self) -> str:
        return json.dumps(self.facts, indent=2)

    def __rich__(self) -> Table:
        """The facts as a two-column table, one GPU per row; CUDA-only rows appear where CUDA does."""
        table = Table(title="comp env", show_header=False)
        table.add_column("fact", style="bold")
        table.add_column("value")
        for label, value in _rows(self.facts):
            table.add_row(label, escape(value))  # values are text (a GPU name may hold brackets), not markup
        return table


def collect_env() -> Environment:
    """Versions, devices and precision support of this machine."""
    facts: dict[str, Any] = {
        "comp": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    facts.update({name: first_version(distributions) for name, distributions in PACKAGES.items()})
    facts.update(cuda_facts())
    facts.update(cpu_facts())
    return Environment(facts)


def cuda_facts() -> dict[str, Any]:
    available = torch.cuda.is_available()
    facts = {
        "cuda_available": available,
        "cuda_version": torch.version.cuda,
        "cuda_arch_list": torch.cuda.get_arch_list(),
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": [gpu_facts(index) for index in range(torch.cuda.device_count())] if available else [],
        "bf16_cuda": torch.cuda.is_bf16_supported() if available else None,
        "channels_last_cuda": None,
        "amp_cuda": None,
        "cuda_error": None,
    }
    if available:
        # A GPU the build has no kernels for (see cuda_arch_list) is visible but fails here: say so.
        try:
            facts["channels_last_cuda"] = channels_last_kept(torch.device("cuda"))
            facts["amp_cuda"] = dtype_name(amp_dtype(torch.device("cuda"), True))
        except RuntimeError as exc:
            facts["cuda_error"] = str(exc).strip().splitlines()[0]
    return facts


def cpu_facts() -> dict[str, Any]:
    flags = cpu_bf16_flags(read_cpuinfo())
    return {
        "mps_available": torch.backends.mps.is_available(),
        "cpu_count": usable_cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_cpu": None if flags is None else bool(flags),
        "cpu_bf16_flags": flags,
        "channels_last_cpu": channels_last_kept(torch.device("cpu")),
        "amp_cpu": dtype_name(amp_dtype(torch.device("cpu"), True)),
    }


def package_version(name: str) -> str | None:
    """The installed distribution's version, read from metadata (importing albumentations would go online)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def first_version(distributions: tuple[str, ...]) -> str | None:
    return next(filter(None, map(package_version, distributions)), None)


def gpu_facts(index: int) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(index)
    return {
        "index": index,
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "compute_capability": f"{props.major}.{props.minor}",
        # bf16 tensor cores and cuDNN bf16 convolutions start at Ampere (8.0); below it bf16 is emulated.
        "bf16_native": props.major >= 8,
    }


def _rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(key, facts[key] or "not installed") for key in ("comp", "python", "platform", "torch", *PACKAGES)]
    rows += [
        ("CUDA available", _yes_no(facts["cuda_available"])),
        ("CUDA (torch built with)", facts["cuda_version"] or "none (CPU build)"),
        ("CUDA architectures (build)", " ".join(facts["cuda_arch_list"]) or "none"),
        ("cuDNN", str(facts["cudnn_version"] or "none")),
    ]
    for gpu in facts["gpus"]:
        rows.append(
            (
                f"GPU {gpu['index']}",
                f"{gpu['name']}, {gpu['memory_gib']} GiB, compute {gpu['compute_capability']}, "
                f"native bf16 {_yes_no(gpu['bf16_native'])}",
            )
        )
    if facts["cuda_available"]:
        rows += [
            ("bf16 on CUDA", _yes_no(facts["bf16_cuda"])),
            ("channels_last kernels (CUDA)", _yes_no(facts["channels_last_cuda"])),
            ("AMP dtype comp uses (CUDA)", facts["amp_cuda"] or "off"),
        ]
    if facts["cuda_error"]:
        rows.append(("CUDA error", facts["cuda_error"]))
    flags = ", ".join(facts["cpu_bf16_flags"] or [])
    rows += [
        ("MPS available", _yes_no(facts["mps_available"])),
        ("CPU cores (usable)", str(facts["cpu_count"])),
        ("CPU capability", facts["cpu_capability"]),
        ("CPU native bf16", "unknown" if facts["bf16_cpu"] is None else _yes_no(facts["bf16_cpu"], flags)),
        ("channels_last kernels (CPU)", _yes_no(facts["channels_last_cpu"])),
        ("AMP dtype comp uses (CPU)", facts["amp_cpu"] or "off"),
    ]
    return rows


def _yes_no(value: bool | None, detail: str = "") -> str:
    if value is None:
        return "n/a"
    return ("yes" if value else "no") + (f" ({detail})" if detail else "")
