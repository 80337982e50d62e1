"""Stratified k-fold assignment, seeded (`folds.seed`, default the top-level seed) and reproducible.

Grouped (StratifiedGroupKFold) when `folds.group_column` is set, or `folds.group_duplicates`: then
near-duplicate training images (comp.data.duplicates) share a group, so a copy never sits in
another fold than its original; both together merge the groups. Multi-label competitions are
stratified on every tag at once (iterative stratification, Sechidis et al. 2011, through the
`iterative-stratification` package).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from rich.text import Text
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from comp.config import Config
from comp.data.competition import Competition, read_csv_text
from comp.data.duplicates import connected_groups, training_duplicate_groups
from comp.errors import CompError
from comp.io import sha256_file, write_csv
from comp.tasks import split_tags, tag_matrix


def _multilabel_splits(train: pd.DataFrame, k: int, seed: int, groups: pd.Series | None):
    if groups is not None:
        raise CompError(
            "folds.group_column is set, but data.task is multilabel: grouped multi-label folds are not supported.",
            hint="Set folds.group_column: null (folds stratified on every tag), or data.task to a single-label task.",
        )
    tags = sorted({t for cell in train["label"] for t in split_tags(cell)})
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return splitter.split(np.zeros(len(train)), tag_matrix(list(train["label"]), tags))


def assign_folds(
    train: pd.DataFrame, k: int, seed: int, groups: pd.Series | None = None, task: str = "multiclass"
) -> pd.DataFrame:
    """id, label, fold (+ group) for every training row, in the training table's order."""
    fold = np.full(len(train), -1, dtype=int)
    if task == "multilabel":
        splits = _multilabel_splits(train, k, seed, groups)
    else:
        splits = _single_label_splits(train, k, seed, groups)
    for index, (_, val_rows) in enumerate(splits):
        fold[val_rows] = index
    table = pd.DataFrame({"id": train["id"].values, "label": train["label"].values, "fold": fold})
    if groups is not None:
        table[groups.name] = groups.values
    return table


def _single_label_splits(train: pd.DataFrame, k: int, seed: int, groups: pd.Series | None):
    labels = train["label"].astype(str)
    counts = labels.value_counts()
    too_small = counts[counts < k]
    if len(too_small):
        raise CompError(
            f"Class(es) {', '.join(map(repr, too_small.index[:5]))} have fewer images "
            f"({', '.join(map(str, too_small.values[:5]))}) than folds.k={k}: stratified folds need at least k each.",
            hint="Lower folds.k, e.g. --set folds.k=3, or merge or drop the rare classes.",
        )
    if groups is None:
        return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(train)), labels)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return splitter.split(np.zeros(len(train)), labels, groups.astype(str))


def _read_groups(config: Config, competition: Competition) -> pd.Series | None:
    """The groups of folds.group_column and/or folds.group_duplicates (merged); None: no grouping."""
    column = _column_groups(config, competition)
    if not config.folds.group_duplicates:
        return column
    duplicates = training_duplicate_groups(competition, config.duplicates.max_distance)
    if column is None:
        return duplicates
    ids = competition.train["id"]
    representative = dict(zip(column, ids, strict=True))  # a group value -> one of its ids
    edges = [*zip(ids, duplicates, strict=True), *((i, representative[g]) for i, g in zip(ids, column, strict=True))]
    return connected_groups(ids, edges, name=f"{column}+duplicates")


def _column_groups(config: Config, competition: Competition) -> pd.Series | None:
    column = config.folds.group_column
    if column is None:
        return None
    path = competition.root / config.data.train_csv
    if competition.layout != "csv":
        raise CompError("folds.group_column needs the csv layout: groups are read from the training CSV.")
    table = read_csv_text(path)
    if column not in table.columns:
        raise CompError(
            f"Group column '{column}' (folds.group_column) not found in {path}; its columns are "
            f"{', '.join(map(repr, table.columns))}.",
            hint="Set folds.group_column to one of them, or to null for plain stratified folds.",
        )
    return table.set_index(config.data.id_column)[column].reindex(competition.train["id"]).rename(column)


class FoldFile(NamedTuple):
    """The fold file `write_folds` wrote or found unchanged, and its table."""

    path: Path
    table: pd.DataFrame
    written: bool

    def __rich__(self) -> Text:
        sizes = self.table["fold"].value_counts().sort_index()
        return Text(
            f"{'Wrote' if self.written else 'Unchanged:'} {self.path}: {len(self.table)} rows in {len(sizes)} folds "
            f"({', '.join(str(n) for n in sizes)})"
        )


def write_folds(config: Config, competition: Competition, force: bool = False) -> FoldFile:
    """Write config.fold_file; an existing file that differs is replaced only with force."""
    groups = _read_groups(config, competition)
    table = assign_folds(competition.train, config.folds.k, config.fold_seed, groups, competition.task)
    path = config.fold_file
    if path.exists():
        existing = read_csv_text(path)
        if existing.equals(table.astype(str)):
            return FoldFile(path, table, False)
        if not force:
            raise CompError(
                f"{path} already exists and differs from the folds computed now (the training data changed?).",
                hint="Runs trained on the old folds would no longer be comparable: pass --force to replace it.",
            )
    write_csv(path, table)
    return FoldFile(path, table, True)


def load_folds(config: Config, competition: Competition) -> pd.DataFrame:
    """The fold file of this config, checked against the training data."""
    path = config.fold_file
    if not path.exists():
        raise CompError(f"Fold file {path} not found.", hint="Run `comp folds` first.")
    table = read_csv_text(path)
    table["fold"] = table["fold"].astype(int)
    if set(table["id"]) != set(competition.train["id"]):
        raise CompError(
            f"{path} does not cover the same training ids as {competition.root}.",
            hint="The data changed since the folds were made: run `comp folds --force`.",
        )
    return table


def fold_file_hash(config: Config) -> str:
    return sha256_file(config.fold_file)
