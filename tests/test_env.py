"""`comp env`: the facts for bug reports, as a table and as JSON, with no config needed."""

from __future__ import annotations

import json
import platform
import re
from importlib import metadata

import cv2
import pandas as pd
import pytest
import timm
import torch
from typer.testing import CliRunner

from comp.cli import app
from comp.device import cpu_bf16_flags

KEYS = {
    "comp", "python", "platform", "torch", "torchvision", "timm", "albumentations", "opencv", "numpy", "pandas",
    "kaggle", "wandb", "mlflow",
    "cuda_available", "cuda_version", "cuda_arch_list", "cudnn_version", "gpus", "bf16_cuda",
    "channels_last_cuda", "amp_cuda", "cuda_error", "mps_available", "cpu_count", "cpu_capability",
    "bf16_cpu", "cpu_bf16_flags", "channels_last_cpu", "amp_cpu",
}  # fmt: skip


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    """No configs/ here: `comp env` must not need one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_env_json_reports_this_machine(empty_dir):
    result = CliRunner().invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert set(facts) == KEYS
    assert facts["torch"] == torch.__version__
    assert facts["python"] == platform.python_version()
    assert facts["cuda_available"] == torch.cuda.is_available()
    assert len(facts["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert facts["cpu_count"] >= 1
    assert isinstance(facts["channels_last_cpu"], bool)


def test_env_table_names_the_versions(empty_dir):
    result = CliRunner().invoke(app, ["env"])
    assert result.exit_code == 0, result.output
    for text in (torch.__version__, platform.python_version(), "native bf16", "channels_last"):
        assert text in result.stdout


def test_env_names_the_data_and_kaggle_packages_versions(empty_dir):
    facts = json.loads(CliRunner().invoke(app, ["env", "--json"]).stdout)
    assert facts["pandas"] == pd.__version__
    assert facts["opencv"].startswith(cv2.__version__)  # the wheel's 5.0.0.93 is OpenCV 5.0.0
    assert facts["albumentations"] == metadata.version("albumentations")
    assert facts["timm"] == timm.__version__
    assert facts["kaggle"] == metadata.version("kaggle")
    table = CliRunner().invoke(app, ["env"], env={"COLUMNS": "200"}).stdout
    for name in ("pandas", "opencv", "albumentations", "timm", "kaggle"):
        assert re.search(rf"{name}\W+{re.escape(facts[name])}", table), name


@pytest.mark.parametrize(
    ("cpuinfo", "flags"),
    [
        ("flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n", ["avx512_bf16", "amx_bf16"]),
        ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n", []),  # AVX512 alone: bf16 is emulated
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", ["bf16"]),  # Arm (Graviton 3)
        (None, None),  # no /proc/cpuinfo (macOS): unknown
    ],
)
def test_cpu_bf16_flags_from_cpuinfo(cpuinfo, flags):
    assert cpu_bf16_flags(cpuinfo) == flags
