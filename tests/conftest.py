"""Shared fixtures: small real competitions built on disk, and a project folder to run comp in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from fake_kaggle import FakeKaggle

from comp.config import Config, load_config

# The suite trains tiny models, whose steps run faster on one thread than split across two; the
# subprocesses that tests start inherit the setting through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]

# What makes a training run tiny: a CIFAR ResNet18 at an eighth of its widths (0.18M parameters) on 16 px
# images, two folds, batches of 8, one epoch, no augmentation, no loader workers. Later overrides win:
# a test adds what it is about (train.epochs=3, folds.k=3, aug.phase1=light...). TINY_SCALE is the part
# that holds for any model and augmentation (the recipes keep their own).
TINY_MODEL = ["model.name=resnet18_cifar", "model.kwargs={widths: [8, 16, 32, 64]}"]
TINY_SCALE = ["data.image_size=16", "folds.k=2", "train.batch_size=8", "train.num_workers=0"]
TINY_RUN = [*TINY_MODEL, *TINY_SCALE, "train.epochs=1", "aug.phase1=none"]


def competition_data(name: str) -> list[str]:
    """The overrides that read the competition <name> from data/<name>."""
    return [f"data.root=data/{name}", f"data.competition={name}"]


def on_competition(name: str) -> list[str]:
    """The overrides that train on data/<name> (as written by the helpers below) in a run called <name>."""
    return [*competition_data(name), f"name={name}"]


def sets(*overrides: str) -> list[str]:
    """The overrides as the CLI takes them: --set KEY=VALUE each."""
    return [arg for override in overrides for arg in ("--set", override)]


def pattern_image(label: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A noisy BGR image whose hue (one of 12) and stripe direction encode the label: easy to learn."""
    hsv = np.array([[[(label % 12) * 15, 255, 230]]], dtype=np.uint8)  # OpenCV hue runs 0..179
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    rows, cols = np.mgrid[0:size, 0:size]
    stripes = ((rows if label % 2 else cols) // 2) % 2
    image = colour * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 10, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_folders_competition(
    root: Path, n_classes: int = 12, per_class: int = 10, n_test: int = 36, seed: int = 0
) -> pd.DataFrame:
    """train/<label>/<img>.png in folders named 0..n_classes-1; returns the hidden test solution."""
    rng = np.random.default_rng(seed)
    for label in range(n_classes):
        folder = root / "train" / str(label)
        folder.mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{label}_{i}.png"), pattern_image(label, rng))
    (root / "test").mkdir()
    test_labels = [i % n_classes for i in range(n_test)]
    ids = [f"t{i:03d}" for i in range(n_test)]
    for image_id, label in zip(ids, test_labels, strict=True):
        cv2.imwrite(str(root / "test" / f"{image_id}.png"), pattern_image(label, rng))
    pd.DataFrame({"id": ids, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return pd.DataFrame({"id": ids, "label": test_labels})


def write_csv_competition(
    root: Path, n_classes: int = 4, per_class: int = 8, ids_with_suffix: bool = False, seed: int = 0
) -> None:
    """train.csv (id,label) with images in train/, test images for the sample submission's ids."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for label in range(n_classes):
        for i in range(per_class):
            name = f"img_{label}_{i}"
            cv2.imwrite(str(root / "train" / f"{name}.png"), pattern_image(label, rng))
            rows.append((f"{name}.png" if ids_with_suffix else name, label))
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(root / "train.csv", index=False)
    test_ids = [f"x{i}" for i in range(6)]
    for i, image_id in enumerate(test_ids):
        cv2.imwrite(str(root / "test" / f"{image_id}.png"), pattern_image(i % n_classes, rng))
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(root / "sample_submission.csv", index=False)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project folder holding the repository's configs/, as the working directory."""
    shutil.copytree(REPO / "comp/configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_config(project):
    """tiny_config(*overrides, competition="shapes"): the default config made tiny (TINY_RUN) and pointed at
    data/<competition>, with the test's own overrides last."""

    def make(*overrides: str, competition: str = "shapes") -> Config:
        return load_config("configs/default.yaml", [*TINY_RUN, *on_competition(competition), *overrides])

    return make


@pytest.fixture
def fake():
    """The fake Kaggle API on loopback; the test fails if a request was meant for the real Kaggle."""
    with FakeKaggle() as server:
        yield server
    assert server.stray == [], "a request was meant for the real Kaggle"


@pytest.fixture
def home(tmp_path_factory) -> Path:
    """An empty home folder for the kaggle client (where it looks for kaggle.json)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True, scope="session")
def decoded_cache(tmp_path_factory) -> Path:
    """comp's cache folder (data.cache: disk) in the session's temporary folder, for comp run here and in
    subprocesses alike, never the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("comp-cache")
    os.environ["COMP_CACHE"] = str(folder)
    return folder
