"""comp's CUDA paths on a GPU: fp16 with a grad scaler, bf16, channels_last, torch.compile, pinned memory with
non-blocking copies, JPEGs decoded by nvJPEG (data.decode: device), and exact resume.

The precision and memory-format tests run on the CPU too (its autocast and grad scaler take the same code
path), so this machine keeps them honest; the rest test what only CUDA has (pinned copies, cuDNN determinism,
compile for a GPU) and are skipped where there is no CUDA device. `pytest -m cuda` selects the module, and
benchmarks/gpu_check.sh runs it on a GPU machine. Each trains the tiny model of conftest for a few steps.
"""

import math
import os

import numpy as np
import pandas as pd
import pytest
import test_resume
import torch
from conftest import TINY_RUN, on_competition, write_csv_competition
from safetensors.torch import load_file
from test_decode_device import DEPRECATED, write_jpegs

import comp.device
import comp.training.fold
from comp.augment import ModelInput
from comp.config import load_config
from comp.data import images
from comp.data.competition import load_competition
from comp.data.folds import write_folds
from comp.data.images import read_image, read_images
from comp.training.fold import train

pytestmark = pytest.mark.cuda
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]  # the paths the CPU shares with CUDA run on both

# cuBLAS reads this when it creates its workspace, after this module is imported: without it, matrix products
# may sum in a different order from one run to the next (the resume tests compare runs bit for bit).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# 4 classes x 16 images: 32 training rows a fold, 8 steps an epoch.
TINY = [
    *TINY_RUN,
    *on_competition("tiny"),
    "train.amp=true",
    "train.batch_size=4",
    "train.epochs=2",
]


def config_with(*overrides, device: str = "cuda"):
    return load_config("configs/default.yaml", [*TINY, f"train.device={device}", *overrides])


@pytest.fixture
def tiny(project):
    write_csv_competition(project / "data/tiny", n_classes=4, per_class=16)
    config = config_with()
    write_folds(config, load_competition(config.data))
    return project


def run(*overrides, device: str = "cuda"):
    config = config_with(*overrides, device=device)
    return train(config, load_competition(config.data), fold=0)


def metrics():
    return pd.read_csv("runs/tiny/fold0/metrics.csv")


@pytest.fixture
def trainers(monkeypatch):
    """The Trainer of every fold trained while the test runs, in order."""
    made, real = [], comp.training.fold.create_trainer

    def create_and_keep(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(comp.training.fold, "create_trainer", create_and_keep)
    return made


def assert_finite_training():
    """The fold's losses and best weights are finite (comp.training.loop stops a diverged run, so this holds
    for a finished one: it checks the run got there)."""
    table = metrics()
    assert np.isfinite(table[["train_loss", "val_loss", "val_accuracy"]].to_numpy()).all()
    assert all(bool(w.isfinite().all()) for w in load_file("runs/tiny/fold0/best.safetensors").values())


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_trains_through_an_enabled_grad_scaler(tiny, trainers, monkeypatch, device):
    # comp picks bf16 on Ampere and later; fp16 is what older GPUs (T4, V100, P100) get: ask for it here.
    monkeypatch.setattr(comp.device, "amp_dtype", lambda device, enabled: torch.float16 if enabled else None)
    factors = []  # what the scaler multiplied each loss by before its backward pass
    real_scale = torch.amp.GradScaler.scale

    def scale(self, outputs):
        scaled = real_scale(self, outputs)
        factors.append(float(scaled.detach() / outputs.detach()))
        return scaled

    monkeypatch.setattr(torch.amp.GradScaler, "scale", scale)
    run(device=device)
    (trainer,) = trainers
    assert trainer.dtype == torch.float16 and trainer.device.type == device
    assert trainer.scaler.is_enabled()
    assert len(factors) == 2 * 8 and all(f > 1 for f in factors)  # 8 steps an epoch, each loss scaled up
    assert_finite_training()


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_trains_without_a_scaler_and_the_loss_falls(tiny, trainers, monkeypatch, device):
    # A CPU without native bf16 emulates it (slowly, but the same path): asked for here whatever this CPU has.
    monkeypatch.setattr(comp.device, "cpu_has_native_bf16", lambda: True)
    run("train.epochs=4", "train.lr=0.01", device=device)
    (trainer,) = trainers
    assert trainer.dtype == torch.bfloat16  # every GPU this runs on is Ampere or later
    assert not trainer.scaler.is_enabled()
    assert_finite_training()
    losses = metrics()["val_loss"]  # the training loss of batches of 4 is too noisy to compare epochs by
    assert losses.iloc[-1] < 0.5 * losses.iloc[0]


# ----------------------------------------------------------------------------- memory format and compile


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_holds_for_the_weights_and_every_batch(tiny, trainers, monkeypatch, device):
    batches, real_call = [], ModelInput.__call__

    def model_input(self, images, augment=None):
        batches.append(real_call(self, images, augment))
        return batches[-1]

    monkeypatch.setattr(ModelInput, "__call__", model_input)
    run("train.channels_last=true", device=device)
    (trainer,) = trainers
    convolutions = [p for p in trainer.model.parameters() if p.ndim == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    assert not all(p.is_contiguous() for p in convolutions)  # 3x3 kernels: the layouts differ, so this one took
    assert batches and all(b.device.type == device for b in batches)
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in batches)
    assert not all(b.is_contiguous() for b in batches)


@CUDA
@pytest.mark.slow
def test_compiled_model_trains(tiny, trainers):
    run("train.compile=true", "train.epochs=1")
    (trainer,) = trainers
    assert trainer.forward is not trainer.model and trainer.forward._orig_mod is trainer.model
    assert_finite_training()


# ----------------------------------------------------------------------------- copies to the device


@CUDA
def test_batches_come_pinned_and_travel_without_blocking(tiny, monkeypatch):
    copies = []  # (pinned, non_blocking) of each image batch copied to the GPU
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        moved = real_to(self, *args, **kwargs)
        if self.dtype == torch.uint8 and self.ndim == 4 and self.device.type == "cpu" and moved.is_cuda:
            copies.append((self.is_pinned(), kwargs.get("non_blocking", False)))
        return moved

    monkeypatch.setattr(torch.Tensor, "to", to)
    run("train.num_workers=2", "train.epochs=1")
    validation_batches = math.ceil(32 / config_with().predict.batch_size)
    assert len(copies) == 8 + validation_batches
    assert all(pinned and non_blocking for pinned, non_blocking in copies)


# ----------------------------------------------------------------------------- JPEG decoding on the device

# nvJPEG against OpenCV: the mean absolute difference that torchvision's own test of its CUDA decoder allows
# (its pixels differ by a level or two); not yet measured on a GPU here.
NVJPEG_MEAN_LEVELS = 2


@CUDA
@pytest.mark.filterwarnings(DEPRECATED)
def test_nvjpeg_decodes_the_jpegs_as_the_cpu_does(tmp_path, monkeypatch):
    paths = write_jpegs(tmp_path)
    opened = []
    monkeypatch.setattr(images, "read_image", lambda path: opened.append(path) or read_image(path))
    on_cuda = read_images(paths, torch.device("cuda"))
    assert opened == []  # nvJPEG took every JPEG: no batch fell back to OpenCV
    for image, path in zip(on_cuda, paths, strict=True):
        reference = read_image(path)
        assert image.shape == reference.shape and image.dtype == np.uint8
        assert np.abs(image.astype(np.float32) - reference).mean() < NVJPEG_MEAN_LEVELS, path


# ----------------------------------------------------------------------------- exact resume


@pytest.fixture(scope="module")
def deterministic():
    """cuDNN and torch restricted to deterministic kernels, as a run that must repeat exactly needs on CUDA.

    warn_only: an op that has no deterministic CUDA kernel warns rather than fails; if one of those made
    the runs differ, the two-identical-runs test below fails too, which tells it apart from a resume bug."""
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


@pytest.fixture(scope="module")
def straight(deterministic, tmp_path_factory):
    """test_resume's uninterrupted run (EMA, mixup, dropout, a phase switch, loader workers), here on the GPU."""
    return test_resume.train_uninterrupted(tmp_path_factory.mktemp("straight"))


@CUDA
def test_two_identical_runs_on_cuda_are_identical(project, deterministic, straight, trainers):
    test_resume.make_tiny(project)
    test_resume.run()
    assert trainers[-1].device.type == "cuda"
    test_resume.assert_same_training(straight)


@CUDA
@pytest.mark.parametrize("checkpoints", [2, 5])  # end of epoch 1 (the phase switch next); mid-epoch 3
def test_resume_on_cuda_equals_the_uninterrupted_run(
    project, deterministic, straight, trainers, monkeypatch, checkpoints
):
    test_resume.make_tiny(project)
    test_resume.interrupt_after_checkpoints(monkeypatch, checkpoints)
    (result,) = test_resume.run(resume=True)
    assert result.status == "resumed" and trainers[-1].device.type == "cuda"
    test_resume.assert_same_training(straight)
