"""`comp duplicates`: duplicate and near-duplicate images within train, between train and test, across folds.

The pairs (comp.data.duplicates) go to runs/<name>/duplicates.csv, the closest of them side by side
to runs/<name>/report/duplicates.png. A pair whose two training images sit in different folds of
the config's fold file leaks between those folds (`folds.group_duplicates: true` keeps each group
in one fold); a training image copied in the test set leaks its label; two copies with different
labels are a labelling conflict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich.console import Group
from rich.text import Text

from comp.config import Config
from comp.data.competition import Competition, read_image
from comp.data.duplicates import find_pairs, hash_images, image_table
from comp.data.folds import load_folds
from comp.io import atomic_path, write_csv
from comp.runs import duplicates_files, run_dir

GRID_PAIRS = 16  # pairs drawn in the PNG, closest first
PANEL = 1.6  # inches per image


@dataclass
class DuplicateReport:
    csv: Path
    grid: Path
    images: int
    pairs: pd.DataFrame
    fold_file: Path | None  # None: no fold file yet, so no fold leaks could be checked

    def count(self, where: str, kind: str | None = None) -> int:
        rows = self.pairs["where"] == where
        return int((rows & (self.pairs["kind"] == kind)).sum() if kind else rows.sum())

    @property
    def split(self) -> pd.DataFrame:
        """Training pairs whose two images sit in different folds."""
        if self.fold_file is None:
            return self.pairs.iloc[:0]
        return self.pairs[(self.pairs["where"] == "train") & (self.pairs["fold_a"] != self.pairs["fold_b"])]

    def __rich__(self) -> Group:
        conflicts = self.pairs[self.pairs["conflict"]]
        lines = [
            Text(f"{self.images} images compared: {len(self.pairs)} duplicate pair(s) -> {self.csv}"),
            Text(
                f"within train: {self.count('train', 'exact')} exact, {self.count('train', 'near')} near; "
                f"train-test: {self.count('train-test', 'exact')} exact, {self.count('train-test', 'near')} near"
            ),
        ]
        if self.fold_file is None:
            lines.append(Text("No fold file yet: run `comp folds` to check pairs split across folds."))
        else:
            lines.append(Text(f"split across folds of {self.fold_file}: {len(self.split)} pair(s)"))
        lines.append(Text(f"conflicting labels: {len(conflicts)} pair(s)"))
        for row in conflicts.head(5).itertuples():
            lines.append(Text(f"  {row.id_a} ({row.label_a}) ~ {row.id_b} ({row.label_b}), distance {row.distance}"))
        if len(self.pairs):
            lines.append(Text(f"closest pairs -> {self.grid}"))
        if len(self.split):
            lines.append(Text("Keep each group in one fold: --set folds.group_duplicates=true, then `comp folds`."))
        return Group(*lines)


def _fold_of(config: Config, competition: Competition) -> pd.Series | None:
    if not config.fold_file.exists():
        return None
    folds = load_folds(config, competition)
    return folds.set_index("id")["fold"]


def pairs_figure(pairs: pd.DataFrame, images: pd.DataFrame) -> Figure:
    """The closest pairs side by side, one pair per row: ids, labels and distance in the titles."""
    shown = pairs.head(GRID_PAIRS)
    paths = {(kind, image_id): path for kind, image_id, path in images[["set", "id", "path"]].itertuples(index=False)}
    fig = Figure(figsize=(2 * PANEL + 0.4, (PANEL + 0.5) * max(len(shown), 1)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(len(shown), 1), 2, squeeze=False))
    for row, pair in zip(axes, shown.itertuples(), strict=False):
        second = "train" if pair.where == "train" else "test"  # the first image is always a training one
        for ax, image_id, label, kind in (
            (row[0], pair.id_a, pair.label_a, "train"),
            (row[1], pair.id_b, pair.label_b, second),
        ):
            ax.imshow(read_image(paths[kind, image_id]))
            ax.set_title(f"{image_id}\n{'test' if kind == 'test' else label}", fontsize=7)
        row[0].set_ylabel(f"{pair.kind} d={pair.distance}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def find_duplicates(config: Config, competition: Competition) -> DuplicateReport:
    """Hash every image, pair the duplicates, write duplicates.csv and the PNG of the closest pairs."""
    images = image_table(competition)
    folds = _fold_of(config, competition)
    pairs = find_pairs(hash_images(images), config.duplicates.max_distance, folds)
    csv, grid = duplicates_files(run_dir(config.name))
    figure = pairs_figure(pairs, images)
    with atomic_path(grid) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    write_csv(csv, pairs)
    return DuplicateReport(csv, grid, len(images), pairs, config.fold_file if folds is not None else None)
