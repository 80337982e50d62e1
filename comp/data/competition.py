"""Competition data: layouts, the class map, image decoding and the training dataset.

The class map is the fix for torchvision's ImageFolder, which numbers classes by sorting folder
names as text ('10' before '2'). Here the order is decided once, numerically when every label
is an integer, and labels keep the competition's own type (10 stays the integer 10).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from comp.config import DataConfig
from comp.errors import CompError
from comp.io import write_json

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
Label = int | str


# ----------------------------------------------------------------------------- class map


def _as_int(value: Any) -> int | None:
    """The integer a label stands for, when it is written as one ('007' is not: it stays text)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit() and str(int(value)) == value:
        return int(value)
    return None


def normalise_labels(labels: Sequence[Any]) -> list[Label]:
    """Labels in the competition's own type: all integers -> int, otherwise str."""
    as_ints = [_as_int(v) for v in labels]
    if all(v is not None for v in as_ints):
        return as_ints
    return [str(v) for v in labels]


def decide_classes(labels: Sequence[Any]) -> list[Label]:
    """The ordered class list: numeric order for integer labels, text order otherwise."""
    return sorted(set(normalise_labels(labels)))


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


# ----------------------------------------------------------------------------- images


def read_image(path: str | Path) -> np.ndarray:
    """Any image file as an HxWx3 uint8 RGB array: grey, RGBA, palette and 16-bit included."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CompError(f"Cannot read image {path}: the file is missing, empty or not an image.")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resolve_image(folder: Path, image_id: str, suffix: str) -> Path | None:
    """An id names its file directly, or as <id><suffix>."""
    for candidate in (folder / image_id, folder / f"{image_id}{suffix}"):
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------- competition


@dataclass
class Competition:
    """A competition's training rows (id, label, path), test rows (id, path) and sample submission."""

    root: Path
    layout: str
    train: pd.DataFrame
    test: pd.DataFrame
    sample: pd.DataFrame
    classes: list[Label]

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


def detect_layout(cfg: DataConfig) -> str:
    root = Path(cfg.root)
    if cfg.layout != "auto":
        return cfg.layout
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


def read_csv_text(path: Path) -> pd.DataFrame:
    """A CSV with every value kept as its original text (ids like '007' stay '007')."""
    if not path.is_file():
        raise CompError(f"{path} not found.", hint="Check data.root and the file name keys in the config.")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CompError(f"{path} is not a readable CSV: {exc}") from None


def _require_column(frame: pd.DataFrame, column: str, path: Path, key: str) -> None:
    if column not in frame.columns:
        raise CompError(
            f"Column '{column}' (config key {key}) not found in {path}; its columns are "
            f"{', '.join(map(repr, frame.columns))}.",
            hint=f"Set {key} to the right column, e.g. --set {key}={frame.columns[0]}.",
        )


def _train_from_csv(cfg: DataConfig, root: Path) -> pd.DataFrame:
    path = root / cfg.train_csv
    table = read_csv_text(path)
    _require_column(table, cfg.id_column, path, "data.id_column")
    _require_column(table, cfg.label_column, path, "data.label_column")
    image_dir = root / cfg.train_dir
    paths = []
    for row, image_id in enumerate(table[cfg.id_column], start=2):
        found = resolve_image(image_dir, image_id, cfg.image_suffix)
        if found is None:
            raise CompError(
                f"Image for id '{image_id}' ({path}, line {row}) not found as {image_dir / image_id} "
                f"or {image_dir / (image_id + cfg.image_suffix)}.",
                hint="Check data.train_dir and data.image_suffix, or remove the row.",
            )
        paths.append(str(found))
    labels = normalise_labels(list(table[cfg.label_column]))
    return pd.DataFrame(
        {"id": table[cfg.id_column].astype(str), "label": pd.Series(labels, dtype=object), "path": paths}
    )


def _train_from_folders(cfg: DataConfig, root: Path) -> pd.DataFrame:
    train_dir = root / cfg.train_dir
    rows = []
    for class_dir in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        for image in sorted(class_dir.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                rows.append((f"{class_dir.name}/{image.name}", class_dir.name, str(image)))
    if not rows:
        raise CompError(f"No images found under the class folders of {train_dir}.")
    ids, labels, paths = zip(*rows, strict=True)
    return pd.DataFrame(
        {"id": list(ids), "label": pd.Series(normalise_labels(labels), dtype=object), "path": list(paths)}
    )


def _test_from_sample(cfg: DataConfig, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    sample_path = root / cfg.sample_submission
    sample = read_csv_text(sample_path)
    if sample.shape[1] < 2:
        raise CompError(f"{sample_path} needs an id column and at least one prediction column.")
    test_dir = root / cfg.test_dir
    ids = sample.iloc[:, 0].astype(str)
    paths = [resolve_image(test_dir, i, cfg.image_suffix) for i in ids]
    missing = [i for i, p in zip(ids, paths, strict=True) if p is None]
    if missing:
        raise CompError(
            f"{len(missing)} test image(s) for ids in {sample_path} are missing from {test_dir} "
            f"(first: {', '.join(missing[:5])}).",
            hint="Check data.test_dir and data.image_suffix, or download the competition again.",
        )
    return pd.DataFrame({"id": ids, "path": [str(p) for p in paths]}), sample


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
    return _test_from_sample(cfg, _require_root(cfg))


def load_competition(cfg: DataConfig) -> Competition:
    """Read a competition's training table, test ids (the sample submission's) and classes."""
    root = _require_root(cfg)
    layout = detect_layout(cfg)
    train = _train_from_csv(cfg, root) if layout == "csv" else _train_from_folders(cfg, root)
    duplicated = train["id"][train["id"].duplicated()]
    if len(duplicated):
        raise CompError(
            f"Duplicate training ids in {root}: {', '.join(duplicated.iloc[:5])}.",
            hint="Each training image needs its own id.",
        )
    test, sample = _test_from_sample(cfg, root)
    return Competition(root, layout, train, test, sample, decide_classes(train["label"]))
