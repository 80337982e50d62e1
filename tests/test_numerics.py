"""train.amp and train.channels_last: what a user sets is what runs; `auto` picks the measured fastest format,
stays off bf16 where the CPU's bf16 backward is unreliable, and the choice is recorded in the fold's run.json."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from conftest import TINY_RUN, on_competition, write_csv_competition

import comp.device
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import write_folds
from comp.device import numeric_format, strided_convolution_on_one_pixel
from comp.runs import run_dir
from comp.training.fold import train

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend (or deny) that this CPU has native bf16, whatever it really has."""

    def set_to(value: bool) -> None:
        monkeypatch.setattr(comp.device, "cpu_has_native_bf16", lambda: value)

    return set_to


def resnet18() -> torch.nn.Module:
    return timm.create_model("resnet18", num_classes=4)


def test_explicit_values_are_what_runs(native_bf16):
    native_bf16(True)
    assert numeric_format(False, False, resnet18(), CPU, 64).dtype is None
    assert numeric_format(False, False, resnet18(), CPU, 64).memory_format == torch.contiguous_format
    assert numeric_format(True, True, resnet18(), CPU, 64).dtype == torch.bfloat16
    native_bf16(False)
    assert numeric_format(True, True, resnet18(), CPU, 64).dtype is None  # no bf16 kernels: amp has nothing to do


def test_auto_trains_in_bf16_on_a_bf16_cpu_and_fp32_elsewhere(native_bf16):
    native_bf16(True)
    assert numeric_format("auto", "auto", resnet18(), CPU, 64).dtype == torch.bfloat16
    native_bf16(False)
    assert numeric_format("auto", "auto", resnet18(), CPU, 64).dtype is None


def test_auto_keeps_fp32_where_a_strided_convolution_sees_one_pixel(native_bf16):
    """resnet18 at 16 px: layer4's strided convolution gets a 1x1 map, the case where oneDNN's bf16 backward
    wrote inf/nan into the padding-only taps (resnet101 at 16 px, 10 of 30 steps); at 32 px its input is 2x2."""
    native_bf16(True)
    assert strided_convolution_on_one_pixel(resnet18(), 16) == "layer4.0.conv1"
    assert strided_convolution_on_one_pixel(resnet18(), 32) is None
    small = numeric_format("auto", "auto", resnet18(), CPU, 16)
    assert small.dtype is None and "layer4.0.conv1" in small.reason
    assert numeric_format(True, "auto", resnet18(), CPU, 16).dtype == torch.bfloat16  # set explicitly: as set


def test_auto_channels_last_for_convolutional_models_only():
    assert numeric_format("auto", "auto", resnet18(), CPU, 32).memory_format == torch.channels_last
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8)
    assert numeric_format("auto", "auto", vit, CPU, 32).memory_format == torch.contiguous_format


def test_the_fold_records_the_format_it_trained_in(project, native_bf16):
    native_bf16(False)
    write_csv_competition(project / "data/tiny", n_classes=4, per_class=8)
    config = load_config("configs/default.yaml", [*TINY_RUN, *on_competition("tiny"), "train.batch_size=4"])
    competition = load_competition(config.data)
    write_folds(config, competition)
    train(config, competition, 0)
    record = json.loads((run_dir(config.name) / "fold0/run.json").read_text())
    assert record["numerics"]["precision"] == "float32"
    assert record["numerics"]["memory_format"] == "channels_last"
    assert "auto" in record["numerics"]["reason"]
