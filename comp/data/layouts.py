"""The rules that turn a competition's files into training rows (id, label, path) and test rows (id, path).

One set of rules, used by the loader (comp.data.competition) and by the survey, which guesses the
`data.*` keys and then loads the competition with them:

- an id names its image file directly, or as <id><data.image_suffix>, in the image folder or in the
  subfolder named by its label (state-farm: train/c0/img_1.jpg listed in driver_imgs_list.csv);
- labels come from a label column, from one-hot columns (one 1 per row: the column's name), from
  class folders, or from the file name (data.label_pattern, a regex with a group named `label`);
- the test ids are the sample submission's first column; a test.csv (data.test_csv) must list the
  same ids.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.config import DataConfig
from comp.data.images import is_image
from comp.errors import CompError

Label = int | str
FIRST_LINE = 2  # a CSV's first data row is line 2 of the file (line 1: the header)
ONE_HOT_VALUES = ("0", "1", "0.0", "1.0")  # what a one-hot label column holds
HOT_VALUES = ("1", "1.0")


class FileIndex:
    """The image files of a folder and of its direct subfolders, by name and by stem."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.names: dict[str, set[str]] = {}  # subfolder ('' for the folder itself) -> image names
        self.stems: dict[str, dict[str, str]] = {}  # subfolder -> stem -> name
        if self.folder.is_dir():
            self._add("", self.folder)
            for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
                if entry.is_dir() and not entry.name.startswith("."):
                    self._add(entry.name, Path(entry.path))

    def _add(self, sub: str, folder: Path) -> None:
        names = {e.name for e in os.scandir(folder) if e.is_file() and is_image(e.name)}
        if names:
            self.names[sub] = names
            self.stems[sub] = {Path(n).stem: n for n in names}

    def find(self, image_id: str, suffix: str | None = None, label=None, any_subfolder: bool = False) -> Path | None:
        """The file an id names: <id> or <id><suffix> (any suffix when None), in the folder or in the
        subfolder named by `label` (with any_subfolder, the survey's search: in any subfolder)."""
        subs = [""] + (list(self.names) if any_subfolder else [str(label)] if label is not None else [])
        for sub in subs:
            names = self.names.get(sub, set())
            name = image_id if image_id in names else None
            if name is None and suffix is not None and image_id + suffix in names:
                name = image_id + suffix
            if name is None and suffix is None:
                name = self.stems.get(sub, {}).get(image_id)
            if name is not None:
                return self.folder / sub / name if sub else self.folder / name
        return None

    def direct(self) -> list[Path]:
        """The images directly in the folder, sorted by name."""
        return [self.folder / n for n in sorted(self.names.get("", ()))]

    def class_folders(self) -> dict[str, list[Path]]:
        """Subfolder -> its images, sorted."""
        return {sub: [self.folder / sub / n for n in sorted(names)] for sub, names in self.names.items() if sub}


def common_suffix(paths) -> str:
    return Counter(Path(p).suffix for p in paths).most_common(1)[0][0]


def read_csv_text(path: Path) -> pd.DataFrame:
    """A CSV with every value kept as its original text (ids like '007' stay '007')."""
    if not path.is_file():
        raise CompError(f"{path} not found.", hint="Check data.root and the file name keys in the config.")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CompError(f"{path} is not a readable CSV: {exc}") from None


def require_column(frame: pd.DataFrame, column: str, path: Path, key: str) -> None:
    if column not in frame.columns:
        raise CompError(
            f"Column '{column}' (config key {key}) not found in {path}; its columns are "
            f"{', '.join(map(repr, frame.columns))}.",
            hint=f"Set {key} to the right column, e.g. --set {key}={frame.columns[0]}.",
        )


# ----------------------------------------------------------------------------- labels


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


def check_no_empty_label(labels: list[str], ids: list[str], path: Path, key: str) -> None:
    for row, (label, image_id) in enumerate(zip(labels, ids, strict=True), start=FIRST_LINE):
        if not str(label).strip():
            raise CompError(
                f"{path}, line {row} (id '{image_id}'): the label is empty.",
                hint=f"Fill in the label ({key}) or remove the row.",
            )


def onehot_labels(
    table: pd.DataFrame, columns: list[str], path: Path, ids: list[str], multilabel: bool = False
) -> list[str]:
    """The one column holding 1 in each row, by name; a row with no 1 or several is refused. With `multilabel`
    (data.task: multilabel) each row's tags instead: the names of its columns holding 1, space-separated."""
    for column in columns:
        require_column(table, column, path, "data.label_columns")
    values = table[columns].apply(lambda c: c.str.strip())
    bad_values = ~values.isin(ONE_HOT_VALUES)
    if bad_values.any().any():
        row, col = next((r, c) for r, c in zip(*bad_values.to_numpy().nonzero(), strict=True))
        raise CompError(
            f"{path}, line {row + FIRST_LINE} (id '{ids[row]}'): column '{columns[col]}' holds "
            f"{values.iat[row, col]!r}; one-hot label columns (data.label_columns) hold 0 or 1.",
            hint="Set data.label_columns to the class columns only.",
        )
    hot = values.isin(HOT_VALUES).to_numpy()
    if multilabel:
        return [" ".join(c for c, h in zip(columns, row, strict=True) if h) for row in hot]
    per_row = hot.sum(axis=1)
    wrong = (per_row != 1).nonzero()[0]
    if len(wrong):
        row = int(wrong[0])
        found = [c for c, h in zip(columns, hot[row], strict=True) if h]
        what = "no 1" if not found else f"{len(found)} 1s ({', '.join(found)})"
        raise CompError(
            f"{path}, line {row + FIRST_LINE} (id '{ids[row]}'): {what} among the one-hot label columns "
            f"{', '.join(columns)}; a single-label competition has exactly one 1 per row "
            f"({len(wrong)} row(s) differ).",
            hint="Rows with several labels look multi-label: set data.task: multilabel (each row's tags: its columns "
            "holding 1). Otherwise fix or drop the row.",
        )
    return [columns[i] for i in hot.argmax(axis=1)]


def label_regex(pattern: str) -> re.Pattern:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise CompError(f"data.label_pattern {pattern!r} is not a valid regular expression: {exc}.") from None
    if "label" not in regex.groupindex:
        raise CompError(
            f"data.label_pattern {pattern!r} has no group named 'label'.",
            hint=r"Mark the label's part of the file name, e.g. data.label_pattern='^(?P<label>[^.]+)\.'.",
        )
    return regex


def label_from_name(regex: re.Pattern, name: str) -> str | None:
    match = regex.search(name)
    return match.group("label") if match and match.group("label") else None


# ----------------------------------------------------------------------------- training rows


def label_rows(ids, labels, paths) -> pd.DataFrame:
    """The training table: id, label (in the competition's own type), path."""
    return pd.DataFrame(
        {"id": list(ids), "label": pd.Series(normalise_labels(list(labels)), dtype=object), "path": list(paths)}
    )


def train_from_csv(cfg: DataConfig, root: Path) -> pd.DataFrame:
    path = root / cfg.train_csv
    table = read_csv_text(path)
    if cfg.id_column is None:
        raise CompError("data.id_column is null: only the pixels layout numbers rows by itself.")
    require_column(table, cfg.id_column, path, "data.id_column")
    ids = list(table[cfg.id_column])
    if cfg.label_columns:
        labels = onehot_labels(table, cfg.label_columns, path, ids, multilabel=cfg.task == "multilabel")
    else:
        require_column(table, cfg.label_column, path, "data.label_column")
        labels = list(table[cfg.label_column])
        check_no_empty_label(labels, ids, path, f"column '{cfg.label_column}'")
    index = FileIndex(root / cfg.train_dir)
    paths = []
    for row, (image_id, label) in enumerate(zip(ids, labels, strict=True), start=FIRST_LINE):
        found = index.find(image_id, cfg.image_suffix, label)
        if found is None:
            folder = index.folder
            raise CompError(
                f"Image for id '{image_id}' ({path}, line {row}) not found as {folder / image_id} "
                f"or {folder / (image_id + cfg.image_suffix)} (nor in {folder / str(label)}/).",
                hint="Check data.train_dir and data.image_suffix, or remove the row.",
            )
        paths.append(str(found))
    return label_rows(ids, labels, paths)


def train_from_folders(cfg: DataConfig, root: Path) -> pd.DataFrame:
    train_dir = root / cfg.train_dir
    classes = FileIndex(train_dir).class_folders()
    rows = [(f"{label}/{p.name}", label, str(p)) for label, images in classes.items() for p in images]
    if not rows:
        raise CompError(f"No images found under the class folders of {train_dir}.")
    return label_rows(*zip(*rows, strict=True))


def train_from_filenames(cfg: DataConfig, root: Path) -> pd.DataFrame:
    """train_dir/<name>, the label taken from each file name by data.label_pattern."""
    train_dir = root / cfg.train_dir
    if not cfg.label_pattern:
        raise CompError("The filenames layout needs data.label_pattern (a regex with a group named 'label').")
    regex = label_regex(cfg.label_pattern)
    images = FileIndex(train_dir).direct()
    if not images:
        raise CompError(f"No images found directly in {train_dir} (the filenames layout's data.train_dir).")
    labels = []
    for image in images:
        label = label_from_name(regex, image.name)
        if label is None:
            raise CompError(
                f"File name '{image.name}' in {train_dir} does not split into a label with "
                f"data.label_pattern {cfg.label_pattern!r}.",
                hint="Fix data.label_pattern, or move files that are not training images out of data.train_dir.",
            )
        labels.append(label)
    return label_rows([p.name for p in images], labels, [str(p) for p in images])


# ----------------------------------------------------------------------------- test rows


def check_same_test_ids(sample_ids: list[str], sample_path: Path, listed: list[str], listed_path: Path) -> None:
    """The sample submission and a test table list the same ids; the first difference is named by line."""
    for ids, path, other_ids, other_path in (
        (sample_ids, sample_path, listed, listed_path),
        (listed, listed_path, sample_ids, sample_path),
    ):
        in_other = set(other_ids)
        for row, image_id in enumerate(ids, start=FIRST_LINE):
            if image_id not in in_other:
                raise CompError(
                    f"{sample_path} and {listed_path} disagree: id '{image_id}' ({path.name}, line {row}) "
                    f"is not in {other_path.name} ({len(sample_ids)} ids vs {len(listed)}).",
                    hint="Check data.test_csv and data.test_id_column, or download the competition again.",
                )


def listed_id_column(cfg: DataConfig, table: pd.DataFrame, path: Path) -> str:
    column = cfg.test_id_column or (cfg.id_column if cfg.id_column in table.columns else str(table.columns[0]))
    require_column(table, column, path, "data.test_id_column")
    return column


def read_sample(cfg: DataConfig, root: Path) -> pd.DataFrame:
    sample_path = root / cfg.sample_submission
    sample = read_csv_text(sample_path)
    if sample.shape[1] < 2:
        raise CompError(f"{sample_path} needs an id column and at least one prediction column.")
    return sample


def read_test_images(cfg: DataConfig, root: Path, sample: pd.DataFrame) -> pd.DataFrame:
    """The sample's ids, each with its image in data.test_dir (checked against data.test_csv when set)."""
    sample_path = root / cfg.sample_submission
    ids = list(sample.iloc[:, 0].astype(str))
    if cfg.test_csv:
        listed_path = root / cfg.test_csv
        listed = read_csv_text(listed_path)
        check_same_test_ids(ids, sample_path, list(listed[listed_id_column(cfg, listed, listed_path)]), listed_path)
    test_dir = root / cfg.test_dir
    index = FileIndex(test_dir)
    paths = [index.find(i, cfg.image_suffix) for i in ids]
    missing = [i for i, p in zip(ids, paths, strict=True) if p is None]
    if missing:
        raise CompError(
            f"{len(missing)} test image(s) for ids in {sample_path} are missing from {test_dir} "
            f"(first: {', '.join(missing[:5])}).",
            hint="Check data.test_dir and data.image_suffix, or download the competition again.",
        )
    return pd.DataFrame({"id": ids, "path": [str(p) for p in paths]})
