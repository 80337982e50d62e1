"""Competition data: the Competition (training rows, test rows, sample submission, classes) read by the
layout's rules (comp.data.layouts, comp.data.pixels), and the class map.

The class map is the fix for torchvision's ImageFolder, which numbers classes by sorting folder
names as text ('10' before '2'). Here the order is decided once, numerically when every label
is an integer, and labels keep the competition's own type (10 stays the integer 10).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from comp.config import DataConfig
from comp.data.images import IMAGE_SUFFIXES, read_image  # noqa: F401  (re-exported: callers import them here)
from comp.data.layouts import (  # noqa: F401  (the class map and read_csv_text are re-exported)
    Label,
    decide_classes,
    normalise_labels,
    read_csv_text,
    read_sample,
    read_test_images,
    train_from_csv,
    train_from_filenames,
    train_from_folders,
)
from comp.data.pixels import test_rows_from_pixels, train_from_pixels
from comp.errors import CompError
from comp.io import write_json
from comp.tasks import check_task_classes, resolve_task, split_tags, tag_matrix

Layout = Literal["folders", "csv", "filenames", "pixels"]


# ----------------------------------------------------------------------------- class map


def column_name(label: Label) -> str:
    """Probability columns are named by the class label as text."""
    return str(label)


def save_classes(classes: list[Label], path: Path) -> None:
    write_json(path, classes)


def load_classes(path: Path) -> list[Label]:
    return json.loads(Path(path).read_text())


def check_same_classes(expected: list[Label], found: list[Label], where: str) -> None:
    """A model trained on other classes is refused: never remap silently."""
    if list(expected) != list(found):
        missing = [c for c in expected if c not in found]
        extra = [c for c in found if c not in expected]
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:10]}" if missing else "",
                f"not in the data {extra[:10]}" if extra else "",
                "same labels in another order" if not missing and not extra else "",
            )
            if part
        )
        raise CompError(
            f"{where} was made for classes that disagree with the data ({detail}).",
            hint="Train it again on this data (comp train --force), or point the config at the data it was made for.",
        )


# ----------------------------------------------------------------------------- competition


@dataclass
class Competition:
    """A competition's training rows (id, label, path), test rows (id, path) and sample submission."""

    root: Path
    layout: Layout
    train: pd.DataFrame
    test: pd.DataFrame
    sample: pd.DataFrame
    classes: list[Label]
    task: str = "multiclass"  # comp.tasks: multiclass | binary | multilabel | ordinal

    def targets(self, ids, classes: list[Label]) -> np.ndarray:
        """The training ids' targets in the task's form: class indices, or a 0/1 column per tag (multilabel)."""
        if self.task != "multilabel":
            return self.class_indices(ids, classes)
        labels = self.train.set_index("id")["label"].reindex(list(ids))
        if labels.isna().any():
            unknown = np.asarray(ids, dtype=object)[labels.isna().to_numpy()]
            raise CompError(
                f"{len(unknown)} OOF id(s) are not training images of {self.root} "
                f"(first: {', '.join(map(str, unknown[:5]))}).",
                hint="Use predictions made on this competition (check data.root).",
            )
        return tag_matrix(list(labels), classes)

    def class_indices(self, ids, classes: list[Label]) -> np.ndarray:
        """Each training id's true class as an index into `classes` (the rows of an OOF table, aligned by id)."""
        labels = self.train.set_index("id")["label"].reindex(list(ids))
        indices = pd.Index(classes).get_indexer(labels)
        if (indices < 0).any():
            unknown = np.asarray(ids, dtype=object)[indices < 0]
            raise CompError(
                f"{len(unknown)} OOF id(s) are not training images of {self.root} "
                f"(first: {', '.join(map(str, unknown[:5]))}).",
                hint="Use predictions made on this competition (check data.root).",
            )
        return indices


def detect_layout(cfg: DataConfig) -> Layout:
    root = Path(cfg.root)
    if cfg.layout != "auto":
        return cfg.layout
    if cfg.label_pattern:
        return "filenames"
    if (root / cfg.train_csv).is_file():
        return "csv"
    train_dir = root / cfg.train_dir
    if train_dir.is_dir() and any(p.is_dir() for p in train_dir.iterdir()):
        return "folders"
    raise CompError(
        f"Cannot tell the layout of {root}: there is neither {root / cfg.train_csv} (csv layout) "
        f"nor class folders under {train_dir} (folders layout).",
        hint="Check data.root (run `comp download` first), or set data.layout, data.train_csv and data.train_dir.",
    )


TRAIN_READERS = {
    "csv": train_from_csv,
    "folders": train_from_folders,
    "filenames": train_from_filenames,
    "pixels": train_from_pixels,
}


def _require_root(cfg: DataConfig) -> Path:
    root = Path(cfg.root)
    if not root.is_dir():
        raise CompError(
            f"Competition folder {root} does not exist.",
            hint=f"Run `comp download {cfg.competition}` first, or set data.root.",
        )
    return root


def load_test_set(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test rows (id, path) the sample submission names, and the sample; no training data is read."""
    root = _require_root(cfg)
    sample = read_sample(cfg, root)
    if detect_layout(cfg) == "pixels":
        return test_rows_from_pixels(cfg, root, sample), sample
    return read_test_images(cfg, root, sample), sample


def load_competition(cfg: DataConfig) -> Competition:
    """Read a competition's training table, test ids (the sample submission's) and classes."""
    root = _require_root(cfg)
    layout = detect_layout(cfg)
    train = TRAIN_READERS[layout](cfg, root)
    duplicated = train["id"][train["id"].duplicated()]
    if len(duplicated):
        raise CompError(
            f"Duplicate training ids in {root}: {', '.join(duplicated.iloc[:5])}.",
            hint="Each training image needs its own id.",
        )
    sample = read_sample(cfg, root)
    test = test_rows_from_pixels(cfg, root, sample) if layout == "pixels" else read_test_images(cfg, root, sample)
    task = resolve_task(cfg.task, list(train["label"]))
    tags = [tag for cell in train["label"] for tag in split_tags(cell)] if task == "multilabel" else None
    classes = decide_classes(tags if tags is not None else train["label"])
    check_task_classes(task, classes, f"the training labels of {root}")
    return Competition(root, layout, train, test, sample, classes, task)
