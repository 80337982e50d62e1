"""The offline demo competition: scikit-learn's bundled handwritten digits as a Kaggle-style CSV layout."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from rich.text import Text
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SOLUTION_FILE = "solution.csv"  # the held-back test labels: never read by training or prediction


@dataclass
class DemoSummary:
    root: Path
    n_train: int
    n_test: int
    n_classes: int
    created: bool

    def __rich__(self) -> Text:
        state = "Built" if self.created else "Already there (--force rebuilds):"
        return Text(f"{state} {self.root}: {self.n_train} train images, {self.n_test} test, {self.n_classes} classes")


def _write_images(folder: Path, ids: list[str], images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for image_id, image in zip(ids, images, strict=True):
        pixels = np.round(image * (255 / 16)).astype(np.uint8)  # digits are 8x8, values 0..16
        cv2.imwrite(str(folder / f"{image_id}.png"), pixels)


def write_demo(dest: Path = Path("data/demo"), force: bool = False, test_fraction: float = 0.2) -> DemoSummary:
    """Write train.csv, train/ and test/ PNGs, sample_submission.csv and the held-back solution.csv."""
    dest = Path(dest)
    if (dest / SOLUTION_FILE).is_file() and not force:
        train = pd.read_csv(dest / "train.csv")
        n_test = len(pd.read_csv(dest / "sample_submission.csv"))
        return DemoSummary(dest, len(train), n_test, train["label"].nunique(), created=False)

    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))  # ids carry no hint of the label order
    ids = np.array([f"digit_{i:04d}" for i in range(len(order))])
    images, labels = digits.images[order], digits.target[order]
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=0
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _write_images(staging / "train", list(ids[train_idx]), images[train_idx])
        _write_images(staging / "test", list(ids[test_idx]), images[test_idx])
        pd.DataFrame({"id": ids[train_idx], "label": labels[train_idx]}).to_csv(staging / "train.csv", index=False)
        pd.DataFrame({"id": ids[test_idx], "label": 0}).to_csv(staging / "sample_submission.csv", index=False)
        pd.DataFrame({"id": ids[test_idx], "label": labels[test_idx]}).to_csv(staging / SOLUTION_FILE, index=False)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return DemoSummary(dest, len(train_idx), len(test_idx), len(set(labels)), created=True)


def score_submission(submission_csv: Path, solution_csv: Path) -> float:
    """Accuracy of a label submission against the held-back solution, aligned by id."""
    submission = pd.read_csv(submission_csv, dtype=str).set_index("id")
    solution = pd.read_csv(solution_csv, dtype=str).set_index("id")
    predicted = submission.reindex(solution.index)["label"]
    return float((predicted == solution["label"]).mean())
