"""Prediction: each trained fold predicts its out-of-fold rows and the test set, with the same TTA views.

Images stream from disk in batches (DataLoader workers, pinned memory on CUDA) and test predictions
are written to parquet as they come, so memory does not grow with the test set beyond the run-level
table itself. Every file is written into a scratch folder and moved into the run only once all of
them succeeded: a failure leaves the previous predictions as they were. The model and the image size
are the run's own (runs/<name>/config.yaml); views, batch size and device come from the current config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import Progress
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from comp.augment import ModelInput, fit_size
from comp.config import Config, load_config
from comp.data.competition import IMAGE_SUFFIXES, Competition, check_same_classes, load_classes, read_image
from comp.data.dataset import loader_options
from comp.data.folds import fold_file_hash, load_folds
from comp.device import amp_dtype, autocast, model_memory_format, resolve_device
from comp.errors import CompError
from comp.io import write_csv, write_json
from comp.metrics import score
from comp.models.factory import create_model
from comp.runs import (
    TableWriter,
    finished_folds,
    fold_dir,
    probability_table,
    run_dir,
    staged_outputs,
    write_predictions,
)
from comp.training.checkpoint import read_record
from comp.tta import AUTO_CANDIDATES, ViewChoice, choose_views, combine, resolve_views, view_log_probs

console = Console()


@dataclass
class PredictResult:
    run_dir: Path
    views: list[str]
    metric: str
    folds: dict[int, float]
    oof_score: float
    missing_folds: list[int]
    choice: ViewChoice | None  # what `predict.tta: auto` measured

    def summary_lines(self) -> list[str]:
        lines = []
        if self.choice:
            kept = [s["view"] for s in self.choice.steps if s["kept"]]
            dropped = [s["view"] for s in self.choice.steps if not s["kept"]]
            lines.append(
                f"TTA auto ({self.metric} on OOF): kept {', '.join(kept)}; dropped {', '.join(dropped) or '-'}"
            )
        lines += [f"fold {fold}: OOF {self.metric} {score:.4f}" for fold, score in self.folds.items()]
        if self.missing_folds:
            lines.append(
                f"[yellow]folds {', '.join(map(str, self.missing_folds))} are not trained: the OOF score "
                f"covers {len(self.folds)} of {len(self.folds) + len(self.missing_folds)} folds[/]"
            )
        lines.append(f"CV {self.metric} (OOF, views {', '.join(self.views)}): {self.oof_score:.4f}  -> {self.run_dir}")
        return lines


@dataclass
class FolderPrediction:
    path: Path
    n_images: int
    views: list[str]
    folds: list[int]


# ----------------------------------------------------------------------------- prediction tables


# ----------------------------------------------------------------------------- the trained run


@dataclass
class TrainedRun:
    config: Config  # the run's own config: the model and image size it was trained with
    classes: list
    folds: list[int]  # finished folds


def open_run(config: Config) -> TrainedRun:
    """The run's config, class map and finished folds, each fold's checkpoint checked before anything runs."""
    folder = run_dir(config.name)
    finished = finished_folds(folder)
    if not finished:
        raise CompError(
            f"Run '{config.name}' has no trained folds in {folder}.",
            hint="Train first: comp train --fold all (or check `name` in the config).",
        )
    classes = load_classes(folder / "classes.json")
    for k in finished:
        path = fold_dir(folder, k) / "best.safetensors"
        if not path.exists():
            raise CompError(
                f"Fold {k} of run '{config.name}' is finished but {path} is missing.",
                hint=f"Retrain it: comp train --fold {k} --force.",
            )
        with safe_open(str(path), framework="pt") as f:
            check_same_classes(classes, json.loads(f.metadata()["classes"]), f"Checkpoint {path}")
    saved = folder / "config.yaml"
    return TrainedRun(load_config(saved) if saved.exists() else config, classes, finished)


def load_fold_model(run: TrainedRun, fold: int, device: torch.device) -> torch.nn.Module:
    path = fold_dir(run_dir(run.config.name), fold) / "best.safetensors"
    local = run.config.model.model_copy(update={"pretrained": False, "weights": None})
    model = create_model(local, len(run.classes))
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise CompError(
            f"{path} does not fit model '{local.name}' of {run_dir(run.config.name) / 'config.yaml'}: "
            f"{str(exc).splitlines()[0]}",
            hint="Retrain the fold (comp train --force), or restore the run's config.yaml.",
        ) from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- streaming images through a model


class PredictImages(Dataset):
    """(uint8 image tensor at image_size, "") by path; an unreadable file gives (blank, its message) instead, so
    that the error is raised in the main process as itself, not as a worker's traceback."""

    def __init__(self, paths, image_size: int):
        self.paths, self.image_size = list(paths), image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image, problem = read_image(self.paths[index]), ""
        except CompError as exc:
            image, problem = np.zeros((8, 8, 3), dtype=np.uint8), exc.message
        return torch.from_numpy(fit_size(image, self.image_size)), problem


def image_loader(paths, image_size: int, config: Config, device: torch.device) -> DataLoader:
    return DataLoader(
        PredictImages(paths, image_size),
        batch_size=config.predict.batch_size,
        shuffle=False,
        **loader_options(config.train, device),
    )


@dataclass
class Streamer:
    """Streams images through a fold's model: the run's model and image size, the current config's
    batch size, workers, device, precision, memory format and TTA mean."""

    run: TrainedRun
    config: Config
    progress: Progress

    def __post_init__(self):
        self.device = resolve_device(self.config.train.device)
        self.dtype = amp_dtype(self.device, self.config.train.amp)
        self.memory_format = model_memory_format(self.config.train.channels_last)

    def __call__(self, fold: int, paths, views: list[str], label: str) -> Iterator[torch.Tensor]:
        """Per-view log-probabilities (views x batch x classes) of each batch, on the CPU, in `paths` order."""
        model = load_fold_model(self.run, fold, self.device).to(memory_format=self.memory_format)
        inputs = ModelInput.of(model, self.device, self.memory_format)
        loader = image_loader(list(paths), self.run.config.data.image_size, self.config, self.device)
        return self._batches(model, inputs, loader, views, f"fold {fold} {label}")

    @torch.no_grad()
    def _batches(
        self, model, inputs: ModelInput, loader: DataLoader, views: list[str], label: str
    ) -> Iterator[torch.Tensor]:
        task = self.progress.add_task(label, total=len(loader))
        for images, problems in loader:
            if any(problems):
                raise CompError(next(p for p in problems if p), hint="Replace or remove the file, then predict again.")
            with autocast(self.device, self.dtype):
                log_probs = view_log_probs(model, inputs(images), views, self.config.predict.tta_mean)
            yield log_probs.cpu()
            self.progress.advance(task)
        self.progress.remove_task(task)


def collect(batches: Iterator[torch.Tensor], n_rows: int) -> np.ndarray:
    """The batches of a Streamer as one views x rows x classes array."""
    out, start = None, 0
    for batch in batches:
        if out is None:
            out = np.empty((batch.shape[0], n_rows, batch.shape[2]), dtype=np.float32)
        out[:, start : start + batch.shape[1]] = batch.numpy()
        start += batch.shape[1]
    return out


def mean_probs(log_probs: np.ndarray | torch.Tensor, mean: str) -> np.ndarray:
    """Probabilities (rows x classes, float64) averaged over the first axis of per-view log-probabilities."""
    return combine(torch.as_tensor(log_probs), mean).exp().double().numpy()


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
        record = read_record(fold_dir(run_dir(config.name), k))
        if record and record.get("fold_file_sha256") not in (None, digest):
            raise CompError(
                f"{config.fold_file} changed since fold {k} of run '{config.name}' was trained on it: "
                "its OOF rows would include images the model trained on.",
                hint="Restore the fold file the run was trained on, or retrain: comp train --fold all --force.",
            )
    return sorted(in_file - set(run.folds))


def predict(config: Config, competition: Competition, tta: bool = False) -> PredictResult:
    """Write every trained fold's oof/test tables, then the run's oof.parquet, test.parquet and cv.json."""
    setting = resolve_views(config.predict.tta, tta)
    run = open_run(config)
    folder, mean, metric = run_dir(config.name), config.predict.tta_mean, config.predict.metric
    check_same_classes(run.classes, competition.classes, f"Run {folder}")
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
        targets = {k: competition.class_indices(oof_ids[k], run.classes) for k in run.folds}
        choice = None
        if setting == "auto":
            choice = choose_views(
                np.concatenate(list(oof_log_probs.values()), axis=1),
                candidates,
                np.concatenate(list(targets.values())),
                metric,
                mean,
            )
        views = choice.views if choice else candidates
        picked = [candidates.index(v) for v in views]

        oof_tables, fold_scores = [], {}
        for k in run.folds:
            probs = mean_probs(oof_log_probs.pop(k)[picked], mean)
            fold_scores[k] = score(metric, targets[k], probs)
            oof_tables.append(probability_table(oof_ids[k], probs, run.classes))
            write_predictions(stage / f"fold{k}" / "oof.parquet", oof_tables[-1], run.classes, views)
        test_probs = fold_mean(stream, competition.test["path"], competition.test["id"], views, "test", stage)

        extra = {"tta_mean": mean, **({"tta_auto": asdict(choice)} if choice else {})}
        oof_score = write_run_predictions(
            stage, oof_tables, test_probs, competition, run.classes, views, metric, fold_scores, config, **extra
        )
    return PredictResult(folder, views, metric, fold_scores, oof_score, missing, choice)


def write_run_predictions(
    stage: Path,
    oof_tables: list[pd.DataFrame],
    test_probs: np.ndarray,
    competition: Competition,
    classes: list,
    views: list[str],
    metric: str,
    fold_scores: dict[int, float],
    fold_config: Config,
    **extra,
) -> float:
    """A run's oof.parquet, test.parquet and cv.json (plus `extra` keys), from its folds' OOF tables and
    mean test probabilities; returns the OOF score."""
    oof = pd.concat(oof_tables, ignore_index=True)
    targets, oof_probs = competition.class_indices(oof["id"], classes), oof.iloc[:, 1:].to_numpy()
    oof_score = score(metric, targets, oof_probs)
    write_predictions(stage / "oof.parquet", oof, classes, views)
    write_predictions(
        stage / "test.parquet", probability_table(competition.test["id"], test_probs, classes), classes, views
    )
    write_json(
        stage / "cv.json",
        {
            "metric": metric,
            "oof": oof_score,
            "folds": {str(k): v for k, v in fold_scores.items()},
            "log_loss": score("log_loss", targets, oof_probs),
            "views": views,
            # which fold file the OOF rows came from: comp ensemble blends only equal ones
            "fold_file": str(fold_config.fold_file),
            "fold_file_sha256": fold_file_hash(fold_config),
            **extra,
        },
    )
    return oof_score


def fold_mean(stream: Streamer, paths, ids, views: list[str], label: str, tables: Path | None = None) -> np.ndarray:
    """The folds' mean probabilities for the images at `paths`; with `tables`, each fold's table is also
    written there (fold<k>/test.parquet) as its batches come."""
    ids = np.asarray(ids)
    total = np.zeros((len(ids), len(stream.run.classes)))
    for k in stream.run.folds:
        start = 0
        table = tables / f"fold{k}" / "test.parquet" if tables else None
        with TableWriter(table, stream.run.classes, views) if table else nullcontext() as writer:
            for batch in stream(k, paths, views, label):
                probs = mean_probs(batch, stream.config.predict.tta_mean)
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
    path = run_dir(config.name) / "cv.json"
    cv = json.loads(path.read_text()) if path.exists() else {}
    if "tta_auto" not in cv:
        raise CompError(
            f"predict.tta is auto, but {path} records no views chosen on the OOF rows.",
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
    table.insert(1, "label", pd.Series(np.asarray(run.classes, dtype=object)[probs.argmax(1)], dtype=object))
    out = run_dir(config.name) / "predictions" / f"{image_dir.name}.csv"
    write_csv(out, table)
    return FolderPrediction(out, len(paths), views, run.folds)
