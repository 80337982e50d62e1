"""Prediction: each trained fold predicts its out-of-fold rows and the test set, with the same TTA views.

Images stream from disk through each fold's model (comp.streaming) and test predictions are written
to parquet as they come, so memory does not grow with the test set beyond the run-level table
itself. Every file is written into a scratch folder and moved into the run only once all of them
succeeded: a failure leaves the previous predictions as they were. The model and the image size are
the run's own (runs/<name>/config.yaml); views, batch size and device come from the current config.

`--test-only` (what a Kaggle kernel runs) predicts only the sample submission's test set, with the
views and mean cv.json recorded, and writes the submission; a blend recomputes its members' test
predictions and blends them with the method and weights of its members.json.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Group
from rich.progress import Progress
from rich.text import Text

from comp.blending import blend_table
from comp.config import Config
from comp.console import console
from comp.data.competition import (
    IMAGE_SUFFIXES,
    Competition,
    check_same_classes,
    load_classes,
    load_competition,
    load_test_set,
)
from comp.data.folds import fold_file_hash, load_folds
from comp.errors import CompError
from comp.io import write_csv, write_json
from comp.metrics import score
from comp.runs import (
    RUNS,
    TableWriter,
    finished_folds,
    fold_dir,
    next_submission_path,
    probability_table,
    read_cv,
    read_fold_record,
    read_predictions,
    read_seeds,
    run_dir,
    seed_config,
    seed_dirs,
    seed_run_name,
    staged_outputs,
    write_predictions,
)
from comp.streaming import Streamer, TrainedRun, collect, open_run
from comp.submission.formats import create_submission, write_submission
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


def run_predict(
    config: Config,
    tta: bool = False,
    images: str | Path | None = None,
    *,
    test_only: bool = False,
    run: str | None = None,
    out: Path | None = None,
) -> PredictResult | FolderPrediction | TestSetPrediction:
    """`comp predict`: the run's OOF and test predictions; with `images`, that folder's; with
    `test_only`, the test set alone, for run `run` into the submission `out`."""
    if test_only or run is not None or out is not None:
        return predict_test_only(config, run, out, test_only=test_only, tta=tta, images=images)
    if images is not None:
        return predict_folder(config, images, tta=tta)
    return predict(config, load_competition(config.data), tta=tta)


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


def predict(config: Config, competition: Competition, tta: bool = False) -> PredictResult | SeedsPrediction:
    """Write every trained fold's oof/test tables, then the run's oof.parquet, test.parquet and cv.json."""
    if read_seeds(run_dir(config.name)):
        return predict_seeds(config, competition, tta)
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
            write_predictions(fold_dir(stage, k) / "oof.parquet", oof_tables[k], run.classes, views, task)
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


@dataclass
class SeedsPrediction:
    """A run of several seeds predicted: each seed's own result, and the seed-averaged CV."""

    run_dir: Path
    metric: str
    seeds: dict[int, PredictResult]
    folds: dict[int, float]
    oof_score: float

    def __rich__(self) -> Group:
        lines = [
            Text(f"seed {seed}: CV {self.metric} {result.oof_score:.4f} (views {', '.join(result.views)})")
            for seed, result in self.seeds.items()
        ]
        lines += [
            Text(f"fold {k}: OOF {self.metric} {value:.4f} (mean of the seeds)") for k, value in self.folds.items()
        ]
        seeds = ", ".join(map(str, self.seeds))
        lines.append(Text(f"CV {self.metric} (OOF, mean of seeds {seeds}): {self.oof_score:.4f}  -> {self.run_dir}"))
        return Group(*lines)


def _seed_tables(folder: Path, seeds: dict[int, PredictResult]) -> tuple[list, dict, dict]:
    """Each seed's OOF and test tables (indexed by id), checked to cover the same rows and classes."""
    oof, test, classes = {}, {}, None
    for seed in seeds:
        seed_folder = seed_dirs(folder)[seed]  # predict_seeds made sure it exists
        oof[seed], oof_classes = read_predictions(seed_folder / "oof.parquet")
        test[seed], _ = read_predictions(seed_folder / "test.parquet")
        classes = classes or oof_classes
        check_same_classes(classes, oof_classes, f"Seed run {seed_folder}")
    first = next(iter(seeds))
    for seed in seeds:
        if set(oof[seed].index) != set(oof[first].index):
            raise CompError(
                f"Seeds {first} and {seed} of run {folder} have different trained folds "
                f"({sorted(seeds[first].folds)} and {sorted(seeds[seed].folds)}): their OOF rows cannot be averaged.",
                hint="Train the same folds under every seed: comp train --seeds N --fold all.",
            )
    return classes, oof, test


def predict_seeds(config: Config, competition: Competition, tta: bool = False) -> SeedsPrediction:
    """Predict each seed's sub-run, then write the run's tables: the mean over seeds, row by row (per fold)."""
    folder, metric = run_dir(config.name), config.predict.metric
    seeds = read_seeds(folder)
    untrained = [s for s in seeds if not finished_folds(run_dir(seed_run_name(config.name, s)))]
    if untrained:
        raise CompError(
            f"Seed(s) {', '.join(map(str, untrained))} of run {folder} have no finished fold: the run's "
            f"seeds ({', '.join(map(str, seeds))}, {folder / 'seeds.json'}) cannot be averaged yet.",
            hint=f"Finish training them: comp train --seeds {len(seeds)} (with --resume if interrupted).",
        )
    results = {seed: predict(seed_config(config, seed), competition, tta) for seed in seeds}
    classes, oof, test = _seed_tables(folder, results)
    ids = next(iter(oof.values())).index
    mean_oof = np.mean([table.loc[ids].to_numpy() for table in oof.values()], axis=0)
    test_ids = competition.test["id"]
    mean_test = np.mean([table.loc[test_ids].to_numpy() for table in test.values()], axis=0)
    fold_of = load_folds(config, competition).set_index("id")["fold"].reindex(ids).to_numpy()
    by_fold = {
        int(k): probability_table(ids[fold_of == k], mean_oof[fold_of == k], classes) for k in sorted(set(fold_of))
    }
    views = sorted({v for r in results.values() for v in r.views})
    per_seed = {
        str(seed): {"oof": r.oof_score, "folds": {str(k): v for k, v in r.folds.items()}, "views": r.views}
        for seed, r in results.items()
    }
    params = config.predict.metric_params
    with staged_outputs(folder) as stage:
        oof_score, fold_scores, _ = write_run_predictions(
            stage, by_fold, mean_test, competition, classes, views, metric, params, config, seeds=per_seed
        )
    return SeedsPrediction(folder, metric, results, fold_scores, oof_score)


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
    write_predictions(stage / "oof.parquet", oof, classes, views, task)
    write_predictions(
        stage / "test.parquet", probability_table(competition.test["id"], test_probs, classes), classes, views, task
    )
    write_json(
        stage / "cv.json",
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
        table = fold_dir(tables, k) / "test.parquet" if tables else None
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
            f"predict.tta is auto, but {run_dir(config.name) / 'cv.json'} records no views chosen on the OOF rows.",
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


# ----------------------------------------------------------------------------- the test set alone (a kernel's)


@dataclass
class TestSetPrediction:
    run: str
    out: Path
    n_images: int
    parts: list[str] = field(default_factory=list)  # per trained run: its folds and views

    def __rich__(self) -> Text:
        return Text(f"{self.n_images} test images, run {self.run} ({'; '.join(self.parts)}) -> {self.out}")


def _member_name(run: str, blend: Path) -> str:
    """A member's run name: members.json records runs/<name> (any other folder cannot be re-predicted)."""
    path = Path(run)
    if path.parent != RUNS:
        raise CompError(
            f"{blend / 'members.json'} lists the member {run}, which is not a run under {RUNS}/: its test "
            "predictions cannot be recomputed.",
            hint=f"Move the member run into {RUNS}/ and blend again (comp ensemble ... --force).",
        )
    return path.name


def _recorded(config: Config, name: str) -> tuple[list[str], str]:
    """The views and mean that `comp predict` chose for this run (cv.json)."""
    cv = read_cv(run_dir(name))
    if "views" not in cv:
        raise CompError(
            f"{run_dir(name) / 'cv.json'} records no TTA views: the run was never predicted.",
            hint=f"Run `comp predict --set name={name}` (or with --tta) first.",
        )
    return cv["views"], cv.get("tta_mean", config.predict.tta_mean)


def run_test_probs(config: Config, name: str, paths: list[str], ids: list[str], parts: list[str]) -> np.ndarray:
    """Mean test probabilities of run `name` (rows in `ids` order, columns in its classes.json order)."""
    folder = run_dir(name)
    members_path = folder / "members.json"
    if members_path.is_file():
        record = json.loads(members_path.read_text())
        classes = load_classes(folder / "classes.json")
        stack = []
        for member in record["members"]:
            member_name = _member_name(member["run"], folder)
            check_same_classes(classes, load_classes(run_dir(member_name) / "classes.json"), f"Member {member_name}")
            stack.append(run_test_probs(config, member_name, paths, ids, parts))
        weights = np.array([m["weight"] for m in record["members"]], dtype=np.float64)
        method = "mean" if record["method"] == "weighted" else record["method"]
        return blend_table(method, np.stack(stack), weights)
    views, mean = _recorded(config, name)
    own = config.model_copy(update={"name": name, "predict": config.predict.model_copy(update={"tta_mean": mean})})
    run = open_run(own)
    with Progress(console=console, transient=True) as progress:
        probs = fold_mean(Streamer(run, own, progress), paths, ids, views, f"{name} test")
    parts.append(f"{name}: folds {','.join(map(str, run.folds))}, views {','.join(views)}")
    return probs


def predict_test_set(config: Config, out: Path) -> TestSetPrediction:
    """Predict the test set of config.data with run config.name and write the submission to `out`."""
    test, sample = load_test_set(config.data)
    name = config.name
    classes = load_classes(run_dir(name) / "classes.json")
    ids, parts = list(test["id"]), []
    probs = run_test_probs(config, name, list(test["path"]), ids, parts)
    table = probability_table(ids, probs, classes).set_index("id")
    cv = read_cv(run_dir(name))  # the task and the decision thresholds fitted on the OOF rows
    frame = create_submission(
        sample,
        table,
        classes,
        config.submission.format,
        config.submission.positive_class,
        task=cv.get("task") or "multiclass",
        thresholds=cv.get("thresholds"),
    )
    out = Path(out)
    write_submission(frame, out)
    return TestSetPrediction(name, out, len(ids), parts)


def predict_test_only(
    config: Config,
    run: str | None = None,
    out: Path | None = None,
    *,
    test_only: bool = True,
    tta: bool = False,
    images: Path | None = None,
) -> TestSetPrediction:
    """`comp predict --test-only [RUN] [--out FILE]`: RUN (default: name) into FILE (default:
    submissions/<run>-test.csv, never overwriting)."""
    if not test_only:
        raise CompError(
            "A RUN argument and --out go with --test-only.", hint="comp predict --test-only RUN [--out FILE]"
        )
    if tta or images is not None:
        raise CompError(
            "--test-only predicts with the views the run's cv.json recorded, on the sample submission's test set.",
            hint="Leave out --tta and --images (choose the views with `comp predict --tta` first).",
        )
    name = run or config.name
    if Path(name).name != name or not run_dir(name).is_dir():
        raise CompError(f"No run '{name}' in {RUNS}/.", hint=f"Name a run folder under {RUNS}/ (ls {RUNS}/).")
    return predict_test_set(config.model_copy(update={"name": name}), out or next_submission_path(f"{name}-test"))
