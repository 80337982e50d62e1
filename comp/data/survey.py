"""Survey a competition folder: which layout it has, which files and columns matter, and the config
lines that load it (the `data.*` keys), with a short summary of what is inside.

Two layouts: `folders` (train/<class>/<image>) and `csv` (a train table whose id column names
image files, with or without their suffix). The sample submission's first column holds the test
ids, found as images in the test folder.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image

from comp.data.competition import IMAGE_SUFFIXES
from comp.errors import CompError

ID_NAMES = ("id", "image_id", "image", "img", "filename", "file", "file_name", "image_name", "name", "path")
LABEL_NAMES = ("label", "labels", "class", "category", "target", "breed", "species", "diagnosis", "y")
ID_SAMPLE = 50  # ids looked up in each image folder to decide where they live
MATCH_SHARE = 0.8  # share of those ids that must be found for the folder to count
SIZE_SAMPLE = 200  # images whose size is read (headers only)
MAX_DEPTH = 3  # folders below the competition root searched for images


@dataclass
class ImageFolder:
    """A folder holding image files directly: their names, and stem -> suffix."""

    path: str  # relative to the competition root, posix style
    names: set[str]
    stems: dict[str, str]

    def resolve(self, image_id: str) -> str | None:
        """The file an id names: itself, or <id><suffix>."""
        if image_id in self.names:
            return image_id
        suffix = self.stems.get(image_id)
        return image_id + suffix if suffix is not None else None

    @property
    def common_suffix(self) -> str:
        return Counter(self.stems.values()).most_common(1)[0][0]


@dataclass
class Survey:
    root: Path
    layout: str  # folders | csv
    train_dir: str
    image_suffix: str
    class_counts: dict[str, int]
    image_sizes: Counter  # (width, height) -> count, over a sample of the training images
    train_csv: str | None = None
    id_column: str | None = None
    label_column: str | None = None
    test_dir: str | None = None
    sample_submission: str | None = None
    n_test: int = 0  # rows of the sample submission
    n_test_found: int = 0  # of those, ids with an image in the test folder
    notes: list[str] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        return sum(self.class_counts.values())

    def config(self, competition: str) -> dict[str, str]:
        """The `data.*` keys that load this competition."""
        keys = {
            "competition": competition,
            "root": self.root.as_posix(),
            "layout": self.layout,
            "train_dir": self.train_dir,
        }
        if self.layout == "csv":
            keys.update(train_csv=self.train_csv, id_column=self.id_column, label_column=self.label_column)
        keys["image_suffix"] = self.image_suffix
        if self.test_dir is not None:
            keys["test_dir"] = self.test_dir
        if self.sample_submission is not None:
            keys["sample_submission"] = self.sample_submission
        return keys

    def config_lines(self, competition: str) -> list[str]:
        return yaml.safe_dump({"data": self.config(competition)}, sort_keys=False).splitlines()

    def summary_lines(self, max_classes: int = 20) -> list[str]:
        counts = list(self.class_counts.items())
        shown = ", ".join(f"{label} ({n})" for label, n in counts[:max_classes])
        more = f", ... {len(counts) - max_classes} more" if len(counts) > max_classes else ""
        lines = [
            f"layout: {self.layout}"
            + (
                f" ({self.train_csv}: id column '{self.id_column}', label column '{self.label_column}')"
                if self.layout == "csv"
                else f" ({self.train_dir}/<class>/<image>)"
            ),
            f"train: {self.n_train} images in {len(counts)} classes: {shown}{more}",
            f"image sizes: {describe_sizes(self.image_sizes)}",
        ]
        if self.sample_submission is not None:
            where = f"found in {self.test_dir}/" if self.test_dir else "no test folder found"
            lines.append(f"test: {self.n_test} ids in {self.sample_submission}, {self.n_test_found} images {where}")
        return lines + [f"note: {note}" for note in self.notes]


# ----------------------------------------------------------------------------- finding things


def competition_root(folder: Path) -> Path:
    """Descend through folders that hold nothing but one folder (archives often add one level),
    unless that folder is the training set itself (train/<class>/<image>)."""
    for _ in range(MAX_DEPTH):
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir() or "train" in entries[0].name.lower():
            break
        folder = entries[0]
    return folder


def image_folders(root: Path) -> list[ImageFolder]:
    """Every folder (up to MAX_DEPTH below root) that holds image files directly."""
    found = []
    for current, dirs, files in os.walk(root):
        depth = len(Path(current).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
        images = [f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        if images:
            stems = {Path(f).stem: Path(f).suffix for f in images}
            found.append(ImageFolder(Path(current).relative_to(root).as_posix(), set(images), stems))
    return found


def _spread(items: list, n: int) -> list:
    """Up to n items spread evenly over the list (deterministic)."""
    step = max(1, len(items) // n)
    return items[::step][:n]


def _folder_of(ids: list[str], folders: list[ImageFolder]) -> ImageFolder | None:
    """The folder where most of the (sampled) ids name an image."""
    sample = _spread(ids, ID_SAMPLE)
    best, best_hits = None, 0
    for folder in folders:
        hits = sum(folder.resolve(i) is not None for i in sample)
        if hits > best_hits:
            best, best_hits = folder, hits
    return best if sample and best_hits >= MATCH_SHARE * len(sample) else None


def _in_class_order(counts: dict[str, int]) -> dict[str, int]:
    """Counts per label in class order: numeric when every label is an integer, text order otherwise."""
    numeric = all(label.lstrip("-").isdigit() for label in counts)
    return {label: int(counts[label]) for label in sorted(counts, key=(lambda v: int(v)) if numeric else str)}


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return None


def _sample_submission(root: Path) -> Path | None:
    csvs = sorted(root.glob("*.csv"))
    for word in ("sample", "submission"):
        for path in csvs:
            if word in path.name.lower():
                return path
    return None


def _by_preference(columns: list[str], names: tuple[str, ...]) -> list[str]:
    known = [c for n in names for c in columns if c.lower() == n]
    return known + [c for c in columns if c not in known]


def _label_column(table: pd.DataFrame, id_column: str) -> str | None:
    """A column of class labels: a usual name first, else the one with the fewest distinct values."""
    others = [c for c in table.columns if c != id_column]
    named = [c for c in _by_preference(others, LABEL_NAMES) if c.lower() in LABEL_NAMES and table[c].nunique() >= 2]
    if named:
        return named[0]
    candidates = [(table[c].nunique(), c) for c in others if 2 <= table[c].nunique() <= max(2, len(table) // 2)]
    return min(candidates)[1] if candidates else None


def _csv_layout(root: Path, folders: list[ImageFolder], sample: Path | None) -> Survey | None:
    csvs = [p for p in sorted(root.glob("*.csv")) if p != sample]
    csvs.sort(key=lambda p: ("train" not in p.name.lower(), "label" not in p.name.lower()))
    for path in csvs:
        table = _read_csv(path)
        if table is None or table.empty:
            continue
        for column in _by_preference([str(c) for c in table.columns], ID_NAMES):
            folder = _folder_of(list(table[column]), folders)
            if folder is None:
                continue
            label = _label_column(table, column)
            if label is None:
                break
            names = [folder.resolve(i) for i in _spread(list(table[column]), SIZE_SAMPLE)]
            sizes = image_sizes([root / folder.path / name for name in names if name])
            return Survey(
                root,
                "csv",
                folder.path,
                folder.common_suffix,
                _in_class_order(table[label].value_counts().to_dict()),
                sizes,
                train_csv=path.name,
                id_column=column,
                label_column=label,
            )
    return None


def _folders_layout(root: Path, folders: list[ImageFolder]) -> Survey | None:
    """The folder whose subfolders (two or more) hold images: train/<class>/<image>."""
    parents: dict[str, list[ImageFolder]] = {}
    for folder in folders:
        parent = Path(folder.path).parent.as_posix()
        if parent != ".":  # class folders directly at the root would make every image folder a class
            parents.setdefault(parent, []).append(folder)
    candidates = [(p, kids) for p, kids in parents.items() if len(kids) >= 2]
    if not candidates:
        return None
    candidates.sort(key=lambda c: ("train" not in Path(c[0]).name.lower(), -sum(len(k.names) for k in c[1])))
    train_dir, classes = candidates[0]
    counts = _in_class_order({Path(k.path).name: len(k.names) for k in classes})
    images = [root / k.path / name for k in classes for name in sorted(k.names)]
    suffix = Counter(s for k in classes for s in k.stems.values()).most_common(1)[0][0]
    return Survey(root, "folders", train_dir, suffix, counts, image_sizes(_spread(images, SIZE_SAMPLE)))


def _find_test(survey: Survey, folders: list[ImageFolder], sample: Path | None) -> None:
    if sample is None:
        survey.notes.append("no sample submission (a CSV named sample*.csv) found: set data.sample_submission")
        return
    table = _read_csv(sample)
    if table is None or table.shape[1] < 2:
        survey.notes.append(f"{sample.name} is not a CSV with an id column and a prediction column")
        return
    survey.sample_submission = sample.name
    ids = list(table.iloc[:, 0])
    survey.n_test = len(ids)
    train = survey.train_dir
    others = [f for f in folders if f.path != train and not f.path.startswith(f"{train}/")]
    same = [f for f in folders if f.path == train]  # csv layouts may keep test images beside train's
    folder = _folder_of(ids, others) or _folder_of(ids, same)
    if folder is None:
        survey.notes.append(f"no folder holds images for the ids of {sample.name}: set data.test_dir")
        return
    survey.test_dir = folder.path
    survey.n_test_found = sum(folder.resolve(i) is not None for i in ids)
    if survey.n_test_found < survey.n_test:
        survey.notes.append(f"{survey.n_test - survey.n_test_found} test ids have no image in {folder.path}/")
    if folder.stems and folder.common_suffix != survey.image_suffix:
        survey.notes.append(f"test images are {folder.common_suffix}, train images {survey.image_suffix}")


def survey_competition(folder: Path) -> Survey:
    """Detect the layout of a competition folder and summarise it; CompError when it cannot tell."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CompError(f"Competition folder {folder} does not exist.", hint="Run `comp download SLUG` first.")
    root = competition_root(folder)
    folders = image_folders(root)
    sample = _sample_submission(root)
    survey = _csv_layout(root, folders, sample) or _folders_layout(root, folders)
    if survey is None:
        raise CompError(
            f"Cannot tell the layout of {root}: no CSV whose id column names image files, and no folder "
            f"of class folders (train/<class>/<image>).",
            hint="Set data.layout, data.train_dir, data.train_csv, data.id_column, data.label_column and "
            "data.image_suffix by hand (configs/default.yaml documents them).",
        )
    _find_test(survey, folders, sample)
    return survey


# ----------------------------------------------------------------------------- image sizes


def image_sizes(paths: list[Path]) -> Counter:
    """(width, height) -> count, from the files' headers (unreadable files are skipped)."""
    sizes: Counter = Counter()
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes[image.size] += 1
        except (OSError, ValueError):
            continue
    return sizes


def describe_sizes(sizes: Counter) -> str:
    if not sizes:
        return "none readable"
    total = sum(sizes.values())
    (w, h), n = sizes.most_common(1)[0]
    if n == total:
        return f"{w}x{h} (all {total} sampled)"
    widths = [s[0] for s in sizes]
    heights = [s[1] for s in sizes]
    return (
        f"{len(sizes)} sizes in {total} sampled, most common {w}x{h} ({n}), "
        f"width {min(widths)}-{max(widths)}, height {min(heights)}-{max(heights)}"
    )
