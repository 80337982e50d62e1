"""One trained run predicted: each fold predicts its out-of-fold rows and the test set, with the same TTA views.

Images stream from disk through each fold's model (comp.streaming) and test predictions are written
to parquet as they come, so memory does not grow with the test set beyond the run-level table
itself. Every file is written into a scratch folder and moved into the run only once all of them
succeeded: a failure leaves the previous predictions as they were. The model and the image size are
the run's own (runs/<name>/config.yaml); views, batch size and device come from the current config.
Also a folder of images (`--images`) and the helpers the seeds and the test-only modes share.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Group
from rich.progress import Progress
from rich.text import Text

from comp.config import Config
from comp.console import console
from comp.data.competition import (
    IMAGE_SUFFIXES,
    Competition,
    check_same_classes,
)
from comp.data.folds import fold_file_hash, load_folds
from comp.errors import CompError
from comp.io import write_csv, write_json
from comp.metrics import score
from comp.runs import (
    TableWriter,
    cv_file,
    fold_dir,
    probability_table,
    read_cv,
    read_fold_record,
    run_dir,
    staged_outputs,
    table_file,
    write_predictions,
)
from comp.streaming import Streamer, TrainedRun, collect, open_run
from comp.tasks import check_metric, decision_labels, decision_record, same_outputs
from comp.trackers import check_trackers, log_results
from comp.tta import AUTO_CANDIDATES, ViewChoice, choose_views, combine, resolve_views


@dataclass
class PredictResult:
    run_dir: Path
    views: list[str]
    metric: str
    folds: dict[int, float]
    oof_score: float
    missing_folds: list[int]
    choice: ViewChoice | None  # what `predict.tta: auto` measured
    decisions: dict | None = None  # comp.tasks.decision_record: the task and the thresholds fitted on OOF rows

    def __rich__(self) -> Group:
        lines = []
        if self.choice:
            kept = [s["view"] for s in self.choice.steps if s["kept"]]
            dropped = [s["view"] for s in self.choice.steps if not s["kept"]]
            lines.append(
                Text(f"TTA auto ({self.metric} on OOF): kept {', '.join(kept)}; dropped {', '.join(dropped) or '-'}")
            )
        lines += [Text(f"fold {fold}: OOF {self.metric} {score:.4f}") for fold, score in self.folds.items()]
        if self.missing_folds:
            lines.append(
                Text(
                    f"folds {', '.join(map(str, self.missing_folds))} are not trained: the OOF score "
                    f"covers {len(self.folds)} of {len(self.folds) + len(self.missing_folds)} folds",
                    style="yellow",
                )
            )
        if self.decisions and self.decisions.get("thresholds") is not None:
            fitted = ", ".join(f"{t:.2f}" for t in self.decisions["thresholds"])
            lines.append(
                Text(
                    f"{self.decisions['task']} decisions: thresholds fitted on the OOF rows [{fitted}]: {self.metric} "
                    f"{self.decisions['oof_default_thresholds']:.4f} -> {self.oof_score:.4f} (applied to test)"
                )
            )
        lines.append(
            Text(f"CV {self.metric} (OOF, views {', '.join(self.views)}): {self.oof_score:.4f}  -> {self.run_dir}")
        )
        return Group(*lines)


@dataclass
class FolderPrediction:
    path: Path
    n_images: int
    views: list[str]
    folds: list[int]

    def __rich__(self) -> Text:
        return Text(
            f"{self.n_images} images, folds {', '.join(map(str, self.folds))}, views {', '.join(self.views)} "
            f"-> {self.path}"
        )


def mean_probs(log_probs: np.ndarray | torch.Tensor, mean: str, task: str = "multiclass") -> np.ndarray:
    """Probabilities (rows x classes, float64) averaged over the first axis of per-view log-probabilities."""
    return combine(torch.as_tensor(log_probs), mean, task=task).exp().double().numpy()


# ----------------------------------------------------------------------------- a run


def check_fold_file(config: Config, run: TrainedRun, folds: pd.DataFrame) -> list[int]:
    """Refuse OOF rows a fold's model was trained on; return the fold file's folds that are not trained."""
    in_file = set(int(k) for k in folds["fold"])
    if not set(run.folds) <= in_file:
        raise CompError(
            f"Run '{config.name}' has trained folds {run.folds}, but {config.fold_file} has folds "
            f"{sorted(in_file)}: the run was trained on another fold file.",
            hint="Set folds.k and seed as they were when the run was trained.",
        )
    digest = fold_file_hash(config)
    for k in run.folds:
        record = read_fold_record(run_dir(config.name), k)
        if record and record.get("fold_file_sha256") not in (None, digest):
            raise CompError(
                f"{config.fold_file} changed since fold {k} of run '{config.name}' was trained on it: "
                "its OOF rows would include images the model trained on.",
                hint="Restore the fold file the run was trained on, or retrain: comp train --fold all --force.",
            )
    return sorted(in_file - set(run.folds))


def check_run_task(config: Config, run: TrainedRun, competition: Competition) -> None:
    """A run trained with a sigmoid per tag cannot predict a single-label task, nor a softmax run a multi-label one."""
    recorded = run.config.data.task
    if recorded != "auto" and not same_outputs(recorded, competition.task):
        raise CompError(
            f"Run '{config.name}' was trained for data.task {recorded}, but the data is read as {competition.task}.",
            hint=f"Set data.task: {recorded} as when the run was trained, or retrain: comp train --fold all --force.",
        )


def predict_run(config: Config, competition: Competition, tta: bool = False) -> PredictResult:
    """Write every trained fold's oof/test tables, then the run's oof.parquet, test.parquet and cv.json."""
    setting = resolve_views(config.predict.tta, tta)
    check_trackers(config)
    run = open_run(config, competition.task)
    folder, mean, metric, task = run_dir(config.name), config.predict.tta_mean, config.predict.metric, run.task
    check_metric(task, metric)
    check_same_classes(run.classes, competition.classes, f"Run {folder}")
    check_run_task(config, run, competition)
    folds = load_folds(config, competition)
    missing = check_fold_file(config, run, folds)
    candidates = AUTO_CANDIDATES if setting == "auto" else setting
    train = competition.train.set_index("id")

    with Progress(console=console, transient=True) as progress, staged_outputs(folder) as stage:
        stream = Streamer(run, config, progress)
        oof_ids = {k: folds.loc[folds["fold"] == k, "id"].to_numpy() for k in run.folds}
        oof_log_probs = {
            k: collect(stream(k, train.loc[oof_ids[k], "path"], candidates, "oof"), len(oof_ids[k])) for k in run.folds
        }
        targets = {k: competition.targets(oof_ids[k], run.classes) for k in run.folds}
        choice = None
        if setting == "auto":
            choice = choose_views(
                np.concatenate(list(oof_log_probs.values()), axis=1),
                candidates,
                np.concatenate(list(targets.values())),
                metric,
                mean,
                task,
                config.predict.metric_params,
            )
        views = choice.views if choice else candidates
        picked = [candidates.index(v) for v in views]

        oof_tables = {}
        for k in run.folds:
            probs = mean_probs(oof_log_probs.pop(k)[picked], mean, task)
            oof_tables[k] = probability_table(oof_ids[k], probs, run.classes)
            write_predictions(table_file(fold_dir(stage, k), "oof"), oof_tables[k], run.classes, views, task)
        test_probs = fold_mean(stream, competition.test["path"], competition.test["id"], views, "test", stage)

        extra = {"tta_mean": mean, **({"tta_auto": asdict(choice)} if choice else {})}
        oof_score, fold_scores, decisions = write_run_predictions(
            stage,
            oof_tables,
            test_probs,
            competition,
            run.classes,
            views,
            metric,
            config.predict.metric_params,
            config,
            **extra,
        )
    log_results(config, folder)
    return PredictResult(folder, views, metric, fold_scores, oof_score, missing, choice, decisions)


def write_run_predictions(
    stage: Path,
    oof_tables: dict[int, pd.DataFrame],
    test_probs: np.ndarray,
    competition: Competition,
    classes: list,
    views: list[str],
    metric: str,
    params: dict,
    fold_config: Config,
    **extra,
) -> tuple[float, dict[int, float], dict]:
    """A run's oof.parquet, test.parquet and cv.json (plus `extra` keys), from its folds' OOF tables (by fold) and
    mean test probabilities; returns the OOF score and each fold's, with the decisions fitted on all OOF rows, and
    the record of those decisions."""
    task = competition.task
    oof = pd.concat(list(oof_tables.values()), ignore_index=True)
    targets, oof_probs = competition.targets(oof["id"], classes), oof.iloc[:, 1:].to_numpy()
    oof_score, decisions = decision_record(task, metric, params, targets, oof_probs)
    fold_scores = {
        k: score(
            metric,
            competition.targets(table["id"], classes),
            table.iloc[:, 1:].to_numpy(),
            **params,
            thresholds=decisions["thresholds"],
        )
        for k, table in oof_tables.items()
    }
    write_predictions(table_file(stage, "oof"), oof, classes, views, task)
    write_predictions(
        table_file(stage, "test"), probability_table(competition.test["id"], test_probs, classes), classes, views, task
    )
    write_json(
        cv_file(stage),
        {
            "metric": metric,
            "oof": oof_score,
            "folds": {str(k): v for k, v in fold_scores.items()},
            "log_loss": score("log_loss", targets, oof_probs),
            "views": views,
            **decisions,
            # which fold file the OOF rows came from: comp ensemble blends only equal ones
            "fold_file": str(fold_config.fold_file),
            "fold_file_sha256": fold_file_hash(fold_config),
            **extra,
        },
    )
    return oof_score, fold_scores, decisions


def fold_mean(stream: Streamer, paths, ids, views: list[str], label: str, tables: Path | None = None) -> np.ndarray:
    """The folds' mean probabilities for the images at `paths`; with `tables`, each fold's table is also
    written there (fold<k>/test.parquet) as its batches come."""
    ids = np.asarray(ids)
    total = np.zeros((len(ids), len(stream.run.classes)))
    for k in stream.run.folds:
        start = 0
        table = table_file(fold_dir(tables, k), "test") if tables else None
        with TableWriter(table, stream.run.classes, views, stream.run.task) if table else nullcontext() as writer:
            for batch in stream(k, paths, views, label):
                probs = mean_probs(batch, stream.config.predict.tta_mean, stream.run.task)
                if writer:
                    writer.append(ids[start : start + len(probs)], probs)
                total[start : start + len(probs)] += probs
                start += len(probs)
    return total / len(stream.run.folds)


# ----------------------------------------------------------------------------- any folder of images


def folder_images(image_dir: Path) -> list[Path]:
    if not image_dir.is_dir():
        raise CompError(f"Images folder {image_dir} does not exist.", hint="Pass an existing folder to --images.")
    paths = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CompError(
            f"No images in {image_dir}: no files ending in {', '.join(sorted(IMAGE_SUFFIXES))}.",
            hint="Point --images at the folder that holds the image files themselves.",
        )
    return paths


def recorded_views(config: Config) -> list[str]:
    """The views `predict.tta: auto` chose for this run the last time `comp predict --tta` ran."""
    cv = read_cv(run_dir(config.name))
    if "tta_auto" not in cv:
        raise CompError(
            f"predict.tta is auto, but {cv_file(run_dir(config.name))} records no views chosen on the OOF rows.",
            hint="Run `comp predict --tta` first (it chooses them), or list the views in predict.tta.",
        )
    return cv["views"]


def predict_folder(config: Config, image_dir: str | Path, tta: bool = False) -> FolderPrediction:
    """runs/<name>/predictions/<folder name>.csv: id (file name), label, and the folds' mean probabilities."""
    image_dir = Path(image_dir).resolve()
    paths = folder_images(image_dir)
    setting = resolve_views(config.predict.tta, tta)
    views = recorded_views(config) if setting == "auto" else setting
    run = open_run(config)
    with Progress(console=console, transient=True) as progress:
        names = [p.name for p in paths]
        probs = fold_mean(Streamer(run, config, progress), [str(p) for p in paths], names, views, image_dir.name)
    table = probability_table(names, probs, run.classes)
    labels = decision_labels(run.task, probs, run.classes, read_cv(run_dir(config.name)).get("thresholds"))
    table.insert(1, "label", pd.Series(labels, dtype=object))
    out = run_dir(config.name) / "predictions" / f"{image_dir.name}.csv"
    write_csv(out, table)
    return FolderPrediction(out, len(paths), views, run.folds)
