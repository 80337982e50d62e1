"""`comp evaluate`: a run's OOF predictions scored every way, a per-class table, cv.json updated, reports.

Works on any run folder with oof.parquet, trained or blended. The true labels come from the
competition's training table, aligned by id. `predict.metric` decides cv.json's "metric" and "oof"
(with the decision thresholds `comp predict` fitted, as cv.json records them); the general metrics
that fit the task are recorded under "metrics". A run of several seeds (`comp train --seeds N`) keeps
its folds in its seed sub-runs: each fold's rows are read there, and each seed's score ("seeds") is
rescored on that seed's own OOF rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text
from sklearn.metrics import precision_recall_fscore_support

from comp.config import Config
from comp.data.competition import Competition, check_same_classes, column_name
from comp.io import write_json
from comp.metrics import GENERAL, METRICS, score
from comp.report import write_reports
from comp.runs import cv_file, fold_dirs, read_cv, read_predictions, read_seeds, resolve_run, seed_dirs, table_file
from comp.tasks import decide
from comp.trackers import check_trackers, log_results


@dataclass
class OOF:
    """A run's OOF rows: ids, targets (class indices, or 0/1 per tag), probabilities (rows x classes), the class
    list, and the task's decision thresholds (cv.json)."""

    ids: np.ndarray
    targets: np.ndarray
    probs: np.ndarray
    classes: list
    task: str = "multiclass"
    thresholds: list | None = None


@dataclass
class Evaluation:
    run_dir: Path
    metric: str
    scores: dict[str, float]  # every metric of comp.metrics
    folds: dict[str, float]  # the configured metric per fold (trained runs)
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    reports: list[Path]
    seeds: dict[str, dict] | None = None  # a run of several seeds: each seed's "oof" and "folds" in the metric

    def __rich__(self) -> Group:
        return Group(
            self._scores_table(),
            *(Text(seed_line(seed, self.metric, scores)) for seed, scores in (self.seeds or {}).items()),
            self._per_class_table(),
            *(Text(f"report: {path}") for path in self.reports),
            Text(f"Updated {cv_file(self.run_dir)}: {self.metric} {self.scores[self.metric]:.4f}"),
        )

    def _scores_table(self) -> Table:
        table = Table("metric", "OOF", *self.folds, title=f"{self.run_dir} (folds: {self.metric} only)")
        for name, value in self.scores.items():
            configured = name == self.metric
            per_fold = [f"{v:.4f}" for v in self.folds.values()] if configured else [""] * len(self.folds)
            table.add_row(Text(name, style="bold" if configured else ""), f"{value:.4f}", *per_fold)
        return table

    def _per_class_table(self) -> Table:
        table = Table("class", "precision", "recall", "f1", "support", title="per class (OOF)")
        for row in self.per_class.itertuples():
            table.add_row(
                Text(str(row[1])), f"{row.precision:.3f}", f"{row.recall:.3f}", f"{row.f1:.3f}", str(row.support)
            )
        return table


def load_oof(run_dir: Path, competition: Competition) -> OOF:
    path = table_file(run_dir, "oof")
    table, classes = read_predictions(path)
    check_same_classes(competition.classes, classes, str(path))
    targets = competition.targets(table.index, classes)
    probs = table[[column_name(c) for c in classes]].to_numpy(dtype=np.float64)
    return OOF(table.index.to_numpy(), targets, probs, classes, competition.task, read_cv(run_dir).get("thresholds"))


def oof_scores(oof: OOF, metric: str, params: dict) -> dict[str, float]:
    """The general metrics that fit the task (default decisions), and the configured one with its parameters and
    the fitted thresholds."""
    names = [n for n in GENERAL if not (oof.task == "multilabel" and METRICS[n].single_label_only)]
    scores = {name: score(name, oof.targets, oof.probs) for name in names}
    scores[metric] = score(metric, oof.targets, oof.probs, **params, thresholds=oof.thresholds)
    return scores


def seed_line(seed: str, metric: str, scores: dict) -> str:
    folds = ", ".join(f"fold {k} {v:.4f}" for k, v in scores["folds"].items())
    return f"seed {seed}: CV {metric} {scores['oof']:.4f}" + (f" ({folds})" if folds else "")


def fold_folders(run_dir: Path) -> dict[int, Path]:
    """The folders whose oof.parquet holds each fold's rows: the run's own, or for a run of several seeds (all
    trained on the same folds) its first seed's."""
    seeds = read_seeds(run_dir)
    return fold_dirs(seed_dirs(run_dir)[seeds[0]] if seeds else run_dir)


def fold_scores(run_dir: Path, oof: OOF, metric: str, params: dict) -> dict[str, float]:
    """The metric on each fold's rows (the ids of fold<k>/oof.parquet); empty for a blended run."""
    scores = {}
    for k, folder in fold_folders(run_dir).items():
        path = table_file(folder, "oof")
        if not path.exists():
            continue
        rows = np.isin(oof.ids, pd.read_parquet(path, columns=["id"])["id"].to_numpy())
        scores[str(k)] = score(metric, oof.targets[rows], oof.probs[rows], **params, thresholds=oof.thresholds)
    return dict(sorted(scores.items(), key=lambda item: int(item[0])))


def seed_scores(run_dir: Path, competition: Competition, metric: str, params: dict) -> dict[str, dict] | None:
    """A run of several seeds: each seed's record in cv.json with its OOF and per-fold scores in `metric`, on the
    seed's own OOF rows and decision thresholds; None for any other run."""
    seeds = read_seeds(run_dir)
    if not seeds:
        return None
    recorded, folders = read_cv(run_dir).get("seeds", {}), seed_dirs(run_dir)
    scores = {}
    for seed in seeds:
        folder = folders[seed]
        oof = load_oof(folder, competition)
        overall = score(metric, oof.targets, oof.probs, **params, thresholds=oof.thresholds)
        own = {"oof": overall, "folds": fold_scores(folder, oof, metric, params)}
        scores[str(seed)] = {**recorded.get(str(seed), {}), **own}
    return scores


def per_class_table(oof: OOF) -> pd.DataFrame:
    predicted = decide(oof.task, oof.probs, oof.thresholds)
    precision, recall, f1, support = precision_recall_fscore_support(
        oof.targets.astype(int), predicted.astype(int), labels=range(len(oof.classes)), zero_division=0
    )
    return pd.DataFrame({"class": oof.classes, "precision": precision, "recall": recall, "f1": f1, "support": support})


def evaluate_run(config: Config, competition: Competition, run: str | None = None) -> Evaluation:
    """Score RUN's OOF predictions (default: the configured experiment), update its cv.json, draw its reports,
    and hand them to the configured trackers."""
    check_trackers(config)
    run_dir = resolve_run(run or config.name)
    oof = load_oof(run_dir, competition)
    metric, params = config.predict.metric, config.predict.metric_params
    scores = oof_scores(oof, metric, params)
    folds = fold_scores(run_dir, oof, metric, params)
    seeds = seed_scores(run_dir, competition, metric, params)
    cv = read_cv(run_dir)
    cv.update(metric=metric, oof=scores[metric], folds=folds, log_loss=scores["log_loss"], metrics=scores)
    if seeds is not None:
        cv["seeds"] = seeds
    image_paths = competition.train.set_index("id")["path"]
    reports = write_reports(run_dir, oof.ids, oof.targets, oof.probs, oof.classes, image_paths)
    write_json(cv_file(run_dir), cv)
    log_results(config, run_dir)
    return Evaluation(run_dir, metric, scores, folds, per_class_table(oof), reports, seeds)
