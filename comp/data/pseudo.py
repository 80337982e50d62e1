"""Pseudo-labelled test images (`data.pseudo_labels`), checked before they join a fold's training rows.

The table is a CSV with an `id` column (test ids of the sample submission) and either a `label`
column (hard labels: the competition's classes) or one probability column per class, named by the
class like a probability submission (soft labels: each row a distribution over the classes), as
`comp pseudo [--soft]` writes it. Its rows join every fold's training rows and never any validation
rows: a training id in it is refused, since it would sit in some fold's validation rows and make that
fold's score dishonest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config
from comp.data.competition import Competition, column_name, normalise_labels, read_csv_text
from comp.errors import CompError
from comp.io import sha256_file

KEY = "data.pseudo_labels"
SUM_TOLERANCE = 1e-3  # how far a soft row's probabilities may sum from 1 (rounding); the row is then renormalised


@dataclass
class PseudoLabels:
    """The pseudo-labelled test images: their paths and targets (class indices; a soft table: one probability
    row each), and the table they came from."""

    path: Path
    sha256: str
    ids: list[str]
    paths: np.ndarray
    targets: np.ndarray

    @property
    def soft(self) -> bool:
        return self.targets.ndim == 2


def is_soft(columns) -> bool:
    """A soft table has one probability column per class where a hard one has `label`."""
    return "label" not in columns


def table_record(path: str | Path) -> dict:
    """What run.json records of the table that joined the training rows."""
    table = read_csv_text(Path(path))
    return {"path": str(path), "sha256": sha256_file(path), "rows": len(table), "soft": is_soft(table.columns)}


def _check_ids(table: pd.DataFrame, path: Path, competition: Competition) -> None:
    ids = table["id"]
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise CompError(
            f"{path} ({KEY}) lists test id '{repeated.iloc[0]}' more than once.", hint="Keep one row per id."
        )
    training = ids[ids.isin(set(competition.train["id"]))]
    if len(training):
        raise CompError(
            f"{path} ({KEY}) pseudo-labels training id(s) {', '.join(training.iloc[:5])}: a training image sits in "
            "a fold's validation rows, so training on it would make that fold's score dishonest.",
            hint="Pseudo-label test images only (comp pseudo RUN writes such a table).",
        )
    unknown = ids[~ids.isin(set(competition.test["id"]))]
    if len(unknown):
        raise CompError(
            f"{path} ({KEY}) has id(s) that are not test ids of {competition.root}: {', '.join(unknown.iloc[:5])} "
            f"(line {int(unknown.index[0]) + 2}).",
            hint="Use a table made from this competition's test predictions (comp pseudo RUN).",
        )


def _targets(table: pd.DataFrame, path: Path, classes: list) -> np.ndarray:
    labels = normalise_labels(list(table["label"])) if len(table) else []
    index = {str(c): i for i, c in enumerate(classes)}
    for row, label in enumerate(labels):
        if str(label) not in index:
            raise CompError(
                f"{path} ({KEY}), line {row + 2}: label {label!r} is not one of the competition's classes "
                f"({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''}).",
                hint="Use a table made from a run trained on this competition (comp pseudo RUN).",
            )
    return np.array([index[str(label)] for label in labels], dtype=np.int64)


def _soft_targets(table: pd.DataFrame, path: Path, classes: list) -> np.ndarray:
    """Each row's class probabilities (float32, rows x classes), checked to be a distribution over the classes."""
    columns = [column_name(c) for c in classes]
    missing = [c for c in columns if c not in table.columns]
    unknown = [c for c in table.columns if c not in {"id", *columns}]
    if missing or unknown:
        problems = [f"no column for class(es) {', '.join(map(repr, missing[:10]))}"] if missing else []
        problems += [f"column(s) {', '.join(map(repr, unknown[:10]))} that are not classes"] if unknown else []
        raise CompError(
            f"{path} ({KEY}) has no 'label' column (hard labels), and its columns are not one probability column "
            f"per class (soft labels): {'; '.join(problems)}.",
            hint=f"Columns id,label, or id and one column per class ({', '.join(columns[:10])}"
            f"{', ...' if len(columns) > 10 else ''}): comp pseudo RUN [--soft] writes either.",
        )
    values = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CompError(
            f"{path} ({KEY}), line {row + 2}, column {columns[col]!r}: {table[columns[col]].iloc[row]!r} is not a "
            "probability in [0, 1].",
            hint="A soft table holds each test image's class probabilities (comp pseudo RUN --soft writes one).",
        )
    sums = values.sum(1)
    off = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)
    if len(off):
        raise CompError(
            f"{path} ({KEY}), line {off[0] + 2}: the probabilities in columns {', '.join(columns[:10])}"
            f"{', ...' if len(columns) > 10 else ''} sum to {sums[off[0]]:.6g}, not 1.",
            hint="Each row of a soft table is a distribution over the classes: its columns sum to 1.",
        )
    return (values / sums[:, None]).astype(np.float32)


def load_pseudo_labels(config: Config, competition: Competition) -> PseudoLabels | None:
    """The table `data.pseudo_labels` names, checked against the competition; None when unset."""
    if config.data.pseudo_labels is None:
        return None
    path = Path(config.data.pseudo_labels)
    if competition.task == "multilabel":
        raise CompError(
            f"{KEY} {path}: pseudo-labels are single-label (one class, or one distribution over the classes, per "
            "test image); data.task is multilabel.",
            hint=f"Set {KEY}: null for this competition.",
        )
    if not path.is_file():
        raise CompError(f"{KEY} {path} not found.", hint="Write one with `comp pseudo RUN`, or set it to null.")
    table = read_csv_text(path)
    if "id" not in table.columns:
        raise CompError(
            f"{path} ({KEY}) has no 'id' column; its columns are {', '.join(map(repr, table.columns))}.",
            hint="A pseudo-label table has columns id,label, or id and one probability column per class "
            "(comp pseudo RUN [--soft] writes one).",
        )
    _check_ids(table, path, competition)
    if is_soft(table.columns):
        targets = _soft_targets(table, path, competition.classes)
    else:
        targets = _targets(table, path, competition.classes)
    test_paths = competition.test.set_index("id")["path"]
    return PseudoLabels(path, sha256_file(path), list(table["id"]), test_paths.loc[table["id"]].to_numpy(), targets)
