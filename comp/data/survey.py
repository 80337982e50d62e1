"""Survey a competition folder: guess the `data.*` keys that load it, then load it with comp's own loader
(comp.data.competition, whose rules live in comp.data.layouts), so that a guess that does not load is
never written, and every count shown is the loader's.

Shapes guessed, first match wins: a pixel table (one image per CSV row); a CSV whose id column names
image files (in a folder, or in its label's subfolder) with a label column or one-hot class columns;
class folders (train/<class>/<image>); labels in file names (train/cat.0.jpg). The test ids are the
sample submission's first column; a test.csv listing them is checked against it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Group
from rich.text import Text

from comp.config import DataConfig
from comp.data.competition import Competition, load_competition
from comp.data.images import check_readers, describe_sizes, image_sizes, is_image
from comp.data.layouts import ONE_HOT_VALUES, FileIndex, common_suffix, label_from_name, label_regex
from comp.errors import CompError
from comp.tasks import split_tags

ID_NAMES = ("id", "image_id", "image", "img", "filename", "file", "file_name", "image_name", "name", "path", "id_code")
LABEL_NAMES = tuple("label labels tags class classname category target breed species diagnosis y".split())
GROUP_NAMES = ("subject", "patient", "patient_id", "patientid", "group", "driver", "site", "user", "study", "source")
ID_SAMPLE = 50  # ids looked up in each image folder to decide where they live
MATCH_SHARE = 0.8  # share of those ids that must be found for the folder to count
SIZE_SAMPLE = 200  # images whose size is read (headers only)
MAX_DEPTH = 3  # folders below the competition root searched for images
MIN_PIXELS = 16  # a CSV with at least this many <prefix><n> columns is a pixel table
LARGEST_SUGGESTED_SIZE = 224  # image_size suggested for large images (what pretrained models expect)
NAME_SEPARATORS = (".", "_", "-")  # labels in file names: the part before the first separator


@dataclass
class Guess:
    """One thing the survey detected, and the config key that changes it."""

    key: str
    value: Any
    reason: str


@dataclass
class Survey:
    root: Path
    data: dict[str, Any]  # the data.* keys that load the competition (root and competition excluded)
    competition: Competition  # loaded with them
    image_sizes: Counter  # (width, height) -> count, over a sample of the training images
    guesses: list[Guess] = field(default_factory=list)
    group_column: str | None = None  # suggested folds.group_column
    notes: list[str] = field(default_factory=list)

    layout = property(lambda self: self.data["layout"])
    train_dir = property(lambda self: self.data.get("train_dir"))
    image_suffix = property(lambda self: self.data["image_suffix"])
    test_dir = property(lambda self: self.data.get("test_dir"))
    sample_submission = property(lambda self: self.data["sample_submission"])
    n_train = property(lambda self: len(self.competition.train))
    n_test = property(lambda self: len(self.competition.test))
    n_test_found = n_test  # the loader refuses a test id without its image

    @property
    def class_counts(self) -> dict[str, int]:
        """Images of each class (multilabel: images holding each tag)."""
        labels = self.competition.train["label"]
        if self.competition.task == "multilabel":
            labels = labels.map(split_tags).explode()
        counts = labels.value_counts()
        return {str(c): int(counts[c]) for c in self.competition.classes}

    @property
    def suggested_image_size(self) -> int:
        """The median short side of the sampled images, at most LARGEST_SUGGESTED_SIZE, at least 8."""
        sides = sorted(min(size) for size, n in self.image_sizes.items() for _ in range(n))
        return max(8, min(LARGEST_SUGGESTED_SIZE, sides[len(sides) // 2])) if sides else LARGEST_SUGGESTED_SIZE

    def config(self, competition: str) -> dict[str, Any]:
        """The `data.*` keys that load this competition."""
        return {"competition": competition, "root": self.root.as_posix(), **self.data}

    def __rich__(self) -> Group:
        counts = list(self.class_counts.items())
        shown = ", ".join(f"{label} ({n})" for label, n in counts[:20])
        more = f", ... {len(counts) - 20} more" if len(counts) > 20 else ""
        kind = "tags (several a row)" if self.competition.task == "multilabel" else "classes"
        lines = [
            f"layout: {self.layout} ({_layout_detail(self.data)})",
            f"train: {self.n_train} images in {len(counts)} {kind}: {shown}{more}",
            f"image sizes: {describe_sizes(self.image_sizes)}",
            f"test: {self.n_test} ids in {self.sample_submission}, {self.n_test_found} images found"
            + (f" in {self.test_dir}/" if self.layout != "pixels" else f" as rows of {self.data['test_csv']}"),
            *(f"detected: {g.reason}  ({g.key})" for g in self.guesses),
            *(f"note: {note}" for note in self.notes),
        ]
        return Group(*map(Text, lines))


def _layout_detail(data: dict[str, Any]) -> str:
    if data["layout"] == "folders":
        return f"{data['train_dir']}/<class>/<image>"
    if data["layout"] == "filenames":
        return f"{data['train_dir']}/<image>, label from the file name by {data['label_pattern']!r}"
    if data["layout"] == "pixels":
        ids = f"id column '{data['id_column']}'" if data["id_column"] else "ids: row numbers 1..N"
        return f"{data['train_csv']}: {ids}, label column '{data['label_column']}', the rest pixels"
    labels = f"one-hot columns {', '.join(data['label_columns'])}" if data.get("label_columns") else None
    labels = labels or f"label column '{data['label_column']}'"
    return f"{data['train_csv']}: id column '{data['id_column']}', {labels}"


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


def image_folders(root: Path) -> list[FileIndex]:
    """Every folder (up to MAX_DEPTH below root, hidden ones skipped) that holds image files or folders of them."""
    found = []
    for current, dirs, files in os.walk(root):
        depth = len(Path(current).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
        if any(is_image(f) for f in files) or dirs:
            index = FileIndex(Path(current))
            if index.names:
                found.append(index)
    return found


def _relative(index: FileIndex, root: Path) -> str:
    return index.folder.relative_to(root).as_posix()


def _spread(items: list, n: int) -> list:
    """Up to n items spread evenly over the list (deterministic)."""
    step = max(1, len(items) // n)
    return items[::step][:n]


def _folder_of(ids: list[str], folders: list[FileIndex], any_subfolder: bool = False) -> FileIndex | None:
    """The folder where most of the (sampled) ids name an image."""
    sample = _spread(ids, ID_SAMPLE)
    best, best_hits = None, 0
    for folder in folders:
        hits = sum(folder.find(i, any_subfolder=any_subfolder) is not None for i in sample)
        if hits > best_hits:
            best, best_hits = folder, hits
    return best if sample and best_hits >= MATCH_SHARE * len(sample) else None


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


def _named(columns, names: tuple[str, ...]) -> str | None:
    return next((c for c in _by_preference(list(columns), names) if c.lower() in names), None)


def _is_binary(values: pd.Series) -> bool:
    return values.str.strip().isin(ONE_HOT_VALUES).all()


def _labels(table: pd.DataFrame, id_column: str) -> dict[str, Any] | None:
    """Label keys: a usual label name, else one-hot columns (two or more 0/1 columns), else the column
    with the fewest distinct values."""
    others = [c for c in table.columns if c != id_column]
    named = _named([c for c in others if table[c].nunique() >= 2], LABEL_NAMES)
    if named:
        return {"label_column": named}
    binary = [c for c in others if _is_binary(table[c])]
    if len(binary) >= 2:
        return {"label_columns": binary}
    candidates = [(table[c].nunique(), c) for c in others if 2 <= table[c].nunique() <= max(2, len(table) // 2)]
    return {"label_column": min(candidates)[1]} if candidates else None


def _group_column(table: pd.DataFrame, used: set[str]) -> str | None:
    """A column of groups (several rows each) other than the id and labels: a usual name only."""
    column = _named([c for c in table.columns if c not in used], GROUP_NAMES)
    return column if column and 2 <= table[column].nunique() <= len(table) // 2 else None


# ----------------------------------------------------------------------------- layouts


def _pixel_columns(table: pd.DataFrame) -> list[str]:
    """The <prefix><n> columns of the commonest prefix (pixel0..pixel783), when there are MIN_PIXELS of them."""
    prefixes = Counter(m.group(1) for c in table.columns if (m := re.fullmatch(r"([A-Za-z_]*)\d+", str(c))))
    if not prefixes or prefixes.most_common(1)[0][1] < MIN_PIXELS:
        return []
    prefix = prefixes.most_common(1)[0][0]
    return [c for c in table.columns if re.fullmatch(rf"{re.escape(prefix)}\d+", str(c))]


def _pixels(root: Path, csvs: list[Path], sample: pd.DataFrame | None) -> tuple[dict, list[Guess]] | None:
    tables = {p: t for p in csvs if (t := _read_csv(p)) is not None and _pixel_columns(t)}
    by_name = sorted(tables, key=lambda p: "train" not in p.name.lower())
    train = next((p for p in by_name if "test" not in p.name.lower()), None)
    if train is None:
        return None
    table, pixels = tables[train], _pixel_columns(tables[train])
    rest = [c for c in table.columns if c not in pixels]
    label = _named(rest, LABEL_NAMES) or (rest[0] if rest else None)
    if label is None:
        return None
    id_column = _named([c for c in rest if c != label], ID_NAMES)
    keys = {"layout": "pixels", "train_csv": train.name, "id_column": id_column, "label_column": label}
    guesses = [
        Guess("data.layout", "pixels", f"{train.name} holds {len(pixels)} pixel columns ({pixels[0]}..)"),
        Guess("data.label_column", label, f"labels in column '{label}' of {train.name}"),
        Guess("data.id_column", id_column, f"training ids: {f'column {id_column!r}' if id_column else 'row numbers'}"),
    ]
    test = next((p for p in tables if "test" in p.name.lower()), None)
    if test is not None:
        keys["test_csv"] = test.name
        ids = set(sample.iloc[:, 0]) if sample is not None else set()
        rest = [c for c in tables[test].columns if c not in _pixel_columns(tables[test])]
        matching = next((c for c in rest if ids and set(tables[test][c]) == ids), None)
        keys["test_id_column"] = matching
        how = f"by its column '{matching}'" if matching else "by row order (the sample's n-th id is row n)"
        guesses.append(Guess("data.test_csv", test.name, f"test pixels in {test.name}, matched to the sample {how}"))
    return keys, guesses


def _csv(root: Path, csvs: list[Path], folders: list[FileIndex]) -> tuple[dict, list[Guess], str | None] | None:
    ordered = sorted(csvs, key=lambda p: ("train" not in p.name.lower(), "label" not in p.name.lower()))
    for path in ordered:
        table = _read_csv(path)
        if table is None or table.empty:
            continue
        for column in _by_preference([str(c) for c in table.columns], ID_NAMES):
            ids = list(table[column])
            folder, nested = _folder_of(ids, folders), False
            if folder is None:
                folder, nested = _folder_of(ids, [f for f in folders if len(f.names) > 1], any_subfolder=True), True
            if folder is None:
                continue
            labels = _labels(table, column)
            if labels is None:
                break
            found = [folder.find(i, any_subfolder=True) for i in _spread(ids, SIZE_SAMPLE)]
            train_dir = _relative(folder, root)
            keys = {"layout": "csv", "train_csv": path.name, "id_column": column, **labels, "train_dir": train_dir}
            keys["image_suffix"] = common_suffix([p for p in found if p is not None])
            where = f"{train_dir}/<label>/" if nested else f"{train_dir}/"
            label_text = (
                f"one-hot class columns {', '.join(labels['label_columns'])}"
                if "label_columns" in labels
                else f"column '{labels['label_column']}'"
            )
            guesses = [
                Guess("data.train_csv", path.name, f"training table {path.name}"),
                Guess("data.id_column", column, f"ids in column '{column}', images in {where}"),
                Guess(f"data.{next(iter(labels))}", next(iter(labels.values())), f"labels: {label_text}"),
            ]
            used = {column, *labels.get("label_columns", [labels.get("label_column")])}
            return keys, guesses, _group_column(table, used)
    return None


def _folders(root: Path, folders: list[FileIndex]) -> tuple[dict, list[Guess]] | None:
    """The folder whose subfolders (two or more) hold images: train/<class>/<image>."""
    candidates = [f for f in folders if len(f.class_folders()) >= 2 and f.folder != root]
    if not candidates:
        return None
    candidates.sort(key=lambda f: ("train" not in f.folder.name.lower(), -sum(map(len, f.names.values()))))
    best = candidates[0]
    train_dir = _relative(best, root)
    suffix = common_suffix([p for images in best.class_folders().values() for p in images])
    keys = {"layout": "folders", "train_dir": train_dir, "image_suffix": suffix}
    return keys, [Guess("data.train_dir", train_dir, f"class folders {train_dir}/<class>/<image>")]


def _name_pattern(names: list[str]) -> str | None:
    """A label_pattern under which most names split into a few labels: <label><separator><rest>.<ext>
    (cat.0.jpg -> cat; 1.jpg does not split)."""
    for separator in map(re.escape, NAME_SEPARATORS):
        regex = label_regex(rf"^(?P<label>[^{separator}]+){separator}.+\.[A-Za-z0-9]+$")
        labels = [label for n in names if (label := label_from_name(regex, n))]
        if len(labels) >= MATCH_SHARE * len(names) and 2 <= len(set(labels)) <= max(2, len(names) // 3):
            return regex.pattern
    return None


def _filenames(root: Path, folders: list[FileIndex]) -> tuple[dict, list[Guess]] | None:
    flat = [f for f in folders if f.names.get("") and f.folder != root]
    flat.sort(key=lambda f: ("train" not in f.folder.name.lower(), -len(f.names[""])))
    for folder in flat:
        names = sorted(folder.names[""])
        pattern = _name_pattern(names)
        if pattern is None:
            continue
        train_dir = _relative(folder, root)
        example = names[0]
        label = label_from_name(label_regex(pattern), example)
        keys = {"layout": "filenames", "train_dir": train_dir, "label_pattern": pattern}
        keys["image_suffix"] = common_suffix(names)
        return keys, [Guess("data.label_pattern", pattern, f"labels in file names: {train_dir}/{example} -> {label}")]
    return None


def _test_keys(root: Path, keys: dict, folders: list[FileIndex], sample: Path, csvs: list[Path]) -> list[Guess]:
    table = _read_csv(sample)
    if table is None or table.shape[1] < 2:
        raise CompError(f"{sample} is not a CSV with an id column and a prediction column.")
    keys["sample_submission"] = sample.name
    reason = f"test ids in column '{table.columns[0]}' of {sample.name}"
    guesses = [Guess("data.sample_submission", sample.name, reason)]
    ids = list(table.iloc[:, 0])
    if keys["layout"] != "pixels":
        train = root / keys["train_dir"]
        others = [f for f in folders if f.folder != train and train not in f.folder.parents]
        folder = _folder_of(ids, others) or _folder_of(ids, [f for f in folders if f.folder == train])
        if folder is None:
            raise CompError(
                f"No folder under {root} holds images for the ids of {sample.name}.", hint="Set data.test_dir."
            )
        keys["test_dir"] = _relative(folder, root)
        guesses.append(Guess("data.test_dir", keys["test_dir"], f"test images in {keys['test_dir']}/"))
        for path in (p for p in csvs if "test" in p.name.lower() and p.name != keys.get("train_csv")):
            listed = _read_csv(path)
            columns = listed.columns if listed is not None else []
            column = next((c for c in columns if set(listed[c]) & set(ids)), None)
            if column is not None:
                keys.update(test_csv=path.name, test_id_column=column)
                guesses.append(Guess("data.test_csv", path.name, f"{path.name} lists the test ids (column '{column}')"))
                break
    return guesses


def survey_competition(folder: Path) -> Survey:
    """Guess the data keys of a competition folder and load it with them; CompError when it cannot."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CompError(f"Competition folder {folder} does not exist.", hint="Run `comp download SLUG` first.")
    root = competition_root(folder)
    folders = image_folders(root)
    sample = _sample_submission(root)
    csvs = [p for p in sorted(root.glob("*.csv")) if p != sample]
    sample_table = _read_csv(sample) if sample else None
    found = _pixels(root, csvs, sample_table)
    group = None
    if found is None and (csv := _csv(root, csvs, folders)) is not None:
        *found, group = csv
    found = found or _folders(root, folders) or _filenames(root, folders)
    if found is None:
        raise CompError(
            f"Cannot tell the layout of {root}: no pixel table, no CSV whose id column names image files, no "
            f"folder of class folders (train/<class>/<image>), no file names that split into labels.",
            hint="Set data.layout, data.train_dir, data.train_csv, data.id_column, data.label_column and "
            "data.image_suffix by hand (configs/default.yaml documents them).",
        )
    keys, guesses = found
    if sample is None:
        raise CompError(
            f"No sample submission (a CSV named sample*.csv) in {root}.", hint="Set data.sample_submission."
        )
    guesses += _test_keys(root, keys, folders, sample, csvs)
    keys.setdefault("image_suffix", ".png")
    competition = load_competition(DataConfig(root=root.as_posix(), **keys))
    if group:
        guesses.append(Guess("folds.group_column", group, f"rows sharing a '{group}' stay in one fold"))
    sampled = _spread(list(competition.train["path"]), SIZE_SAMPLE)
    check_readers(sampled)
    sizes = image_sizes(sampled)
    survey = Survey(root, keys, competition, sizes, guesses, group)
    size = survey.suggested_image_size
    reason = f"image size {size}: the sampled images' median short side, at most {LARGEST_SUGGESTED_SIZE}"
    survey.guesses.append(Guess("data.image_size", size, reason))
    return survey
