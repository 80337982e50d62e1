"""Pseudo-labelled test images (`data.pseudo_labels`), checked before they join a fold's training rows.

The table is a CSV with an `id` column (test ids of the sample submission) and a `label` column
(the competition's classes), as `comp pseudo` writes it. Its rows join every fold's training rows
and never any validation rows: a training id in it is refused, since it would sit in some fold's
validation rows and make that fold's score dishonest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config
from comp.data.competition import Competition, normalise_labels, read_csv_text
from comp.errors import CompError
from comp.io import sha256_file

KEY = "data.pseudo_labels"


@dataclass
class PseudoLabels:
    """The pseudo-labelled test images: their paths and class indices, and the table they came from."""

    path: Path
    sha256: str
    ids: list[str]
    paths: np.ndarray
    targets: np.ndarray

    def record(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "rows": len(self.ids)}


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


def load_pseudo_labels(config: Config, competition: Competition) -> PseudoLabels | None:
    """The table `data.pseudo_labels` names, checked against the competition; None when unset."""
    if config.data.pseudo_labels is None:
        return None
    path = Path(config.data.pseudo_labels)
    if competition.task == "multilabel":
        raise CompError(
            f"{KEY} {path}: pseudo-labels are single-label (one class per test image); data.task is multilabel.",
            hint=f"Set {KEY}: null for this competition.",
        )
    if not path.is_file():
        raise CompError(f"{KEY} {path} not found.", hint="Write one with `comp pseudo RUN`, or set it to null.")
    table = read_csv_text(path)
    missing = [c for c in ("id", "label") if c not in table.columns]
    if missing:
        raise CompError(
            f"{path} ({KEY}) has no {' or '.join(repr(c) for c in missing)} column; its columns are "
            f"{', '.join(map(repr, table.columns))}.",
            hint="A pseudo-label table has columns id,label (comp pseudo RUN writes one).",
        )
    _check_ids(table, path, competition)
    targets = _targets(table, path, competition.classes)
    test_paths = competition.test.set_index("id")["path"]
    return PseudoLabels(path, sha256_file(path), list(table["id"]), test_paths.loc[table["id"]].to_numpy(), targets)
