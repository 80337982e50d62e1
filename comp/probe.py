"""`comp probe`: a classical classifier on pooled backbone features, fold by fold, written as a run.

Each image becomes the backbone's pooled features (timm's `forward_features`, then
`forward_head(pre_logits=True)`). For each fold, a pipeline of StandardScaler and an SVM or a
logistic regression is tuned by GridSearchCV on the fold's training rows alone (inner stratified
folds), refitted on all of them, and predicts the fold's held-out rows and the test set. The
result is an ordinary run folder (per-fold and run-level oof.parquet / test.parquet, cv.json,
classes.json, config.yaml), so `comp ensemble` blends it with trained runs.

The backbone is the configured model (`model.pretrained` or `model.weights`), or, with
`--from-run RUN`, each fold's own trained weights: fold k's classifier sees only features from
fold k's model, which never trained on fold k's held-out rows. Features are cached under
runs/<name>/features/ (safetensors), keyed by what they depend on, so a new grid reuses them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from rich.text import Text
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from comp.augment import ModelInput
from comp.config import Config, ProbeConfig, save_config
from comp.console import console
from comp.data.competition import Competition, check_same_classes, save_classes
from comp.data.folds import load_folds
from comp.device import autocast, numeric_format, resolve_device
from comp.errors import CompError
from comp.io import atomic_path, sha256_file, write_json
from comp.metrics import score
from comp.models.factory import create_model
from comp.predict_run import write_run_predictions
from comp.runs import (
    classes_file,
    config_file,
    cv_file,
    fold_dir,
    fold_dirs,
    probability_table,
    run_dir,
    staged_outputs,
    table_file,
    write_predictions,
)
from comp.streaming import TrainedRun, create_image_loader, image_batches, load_fold_model, open_run

DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "svm": {"C": [0.1, 1, 10], "gamma": ["scale", 0.001], "kernel": ["rbf", "poly"]},
    "logistic": {"C": [0.01, 0.1, 1, 10]},
}
# Grid-search scoring per predict.metric. The probability metrics are searched by accuracy: an SVM
# has no probabilities until its final fit (Platt scaling is too slow to repeat for every candidate).
SEARCH_SCORING = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "macro_f1": "f1_macro"}
VIEWS = ["identity"]  # the features see each image once, as it is


@dataclass
class Backbone:
    """The model that featurises the images for some folds, and what its features depend on."""

    key: str  # the cache file's name
    identity: dict  # a changed value invalidates the cache
    image_size: int
    load: Callable[[torch.device], torch.nn.Module]


@dataclass
class FoldProbe:
    best_params: dict
    search_score: float  # mean inner-CV score of the best candidate
    score: float  # on the fold's held-out rows


@dataclass
class ProbeResult:
    run_dir: Path
    metric: str
    classifier: str
    folds: dict[int, FoldProbe]
    oof_score: float

    def __rich__(self) -> Text:
        return Text(f"CV {self.metric} (OOF) of the {self.classifier} probe: {self.oof_score:.4f}  -> {self.run_dir}")


# ----------------------------------------------------------------------------- backbones


def images_digest(competition: Competition) -> str:
    text = "\n".join([*competition.train["path"], "--test--", *competition.test["path"]])
    return hashlib.sha256(text.encode()).hexdigest()


def configured_backbone(config: Config, num_classes: int) -> Backbone:
    cfg = config.model
    if not cfg.pretrained and not cfg.weights:
        raise CompError(
            f"comp probe needs a trained backbone, but model '{cfg.name}' has model.pretrained: false and no "
            "model.weights: its features would be random.",
            hint="Set model.pretrained: true, or model.weights: PATH, or pass --from-run RUN to use a trained run's "
            "fold weights.",
        )
    identity = {
        "model": cfg.model_dump(mode="json"),
        "image_size": config.data.image_size,
        "weights_sha256": sha256_file(cfg.weights) if cfg.weights and Path(cfg.weights).is_file() else None,
    }
    return Backbone(
        "backbone", identity, config.data.image_size, lambda device: create_model(cfg, num_classes).to(device).eval()
    )


def fold_backbone(run: TrainedRun, fold: int) -> Backbone:
    weights = fold_dir(run_dir(run.config.name), fold) / "best.safetensors"
    identity = {
        "run": str(run_dir(run.config.name)),
        "fold": fold,
        "weights_sha256": sha256_file(weights),
        "image_size": run.config.data.image_size,
    }
    return Backbone(
        f"fold{fold}", identity, run.config.data.image_size, lambda device: load_fold_model(run, fold, device)
    )


def plan(config: Config, competition: Competition, from_run: str | None) -> tuple[Config, dict[int, Backbone]]:
    """The config whose fold file and model the probe uses, and the backbone of each fold."""
    if from_run is None:
        folds = load_folds(config, competition)
        backbone = configured_backbone(config, len(competition.classes))
        return config, {int(k): backbone for k in sorted(folds["fold"].unique())}
    run = open_run(config.model_copy(update={"name": from_run}))
    check_same_classes(run.classes, competition.classes, f"Run {run_dir(run.config.name)}")
    folds = load_folds(run.config, competition)  # the run's own folds: its fold k never saw fold k's rows
    missing = sorted(set(int(k) for k in folds["fold"]) - set(run.folds))
    if missing:
        raise CompError(
            f"Run '{from_run}' has unfinished folds {missing}: their rows would get no OOF prediction.",
            hint=f"Finish them first: comp train --fold all (with the config of run '{from_run}').",
        )
    return run.config, {k: fold_backbone(run, k) for k in run.folds}


# ----------------------------------------------------------------------------- features


@torch.no_grad()
def extract_features(
    model: torch.nn.Module, paths, image_size: int, config: Config, device: torch.device, progress: Progress, label: str
) -> np.ndarray:
    """Pooled pre-logits features (rows x features, float32) of the images, in `paths` order."""
    inputs = ModelInput.of(model, device)
    loader = create_image_loader(list(paths), image_size, config, device)
    dtype = numeric_format(config.train.amp, False, model, device, image_size).dtype
    out = []
    for images in image_batches(loader, progress, label, "probe"):
        with autocast(device, dtype):
            features = model.forward_head(model.forward_features(inputs(images)), pre_logits=True)
        out.append(features.float().flatten(1).cpu())
    return torch.cat(out).numpy()


def cached_features(
    backbone: Backbone,
    competition: Competition,
    config: Config,
    cache_dir: Path,
    device: torch.device,
    progress: Progress,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) features in the competition's row order, from the cache when it still applies."""
    path = cache_dir / f"{backbone.key}.safetensors"
    key = json.dumps({**backbone.identity, "images": images_digest(competition)}, sort_keys=True)
    if path.exists():
        with safe_open(str(path), framework="np") as f:
            if f.metadata().get("key") == key:
                return f.get_tensor("train"), f.get_tensor("test")
    model = backbone.load(device)
    train = extract_features(
        model,
        competition.train["path"],
        backbone.image_size,
        config,
        device,
        progress,
        f"{backbone.key} features: train",
    )
    test = extract_features(
        model, competition.test["path"], backbone.image_size, config, device, progress, f"{backbone.key} features: test"
    )
    with atomic_path(path) as tmp:
        save_file({"train": torch.from_numpy(train), "test": torch.from_numpy(test)}, str(tmp), metadata={"key": key})
    return train, test


# ----------------------------------------------------------------------------- the classifier


def create_pipeline(cfg: ProbeConfig, seed: int) -> Pipeline:
    if cfg.classifier == "svm":
        classifier = SVC(random_state=seed)
    else:
        classifier = LogisticRegression(max_iter=2000, random_state=seed)
    return Pipeline([("scale", StandardScaler()), ("clf", classifier)])


def param_grid(cfg: ProbeConfig) -> list[dict[str, list]]:
    """probe.grid (or the classifier's default) with each argument addressed to the pipeline's classifier."""
    grid = cfg.grid if cfg.grid is not None else DEFAULT_GRIDS[cfg.classifier]
    grids = grid if isinstance(grid, list) else [grid]
    return [{f"clf__{name}": values for name, values in g.items()} for g in grids]


def fit_fold(
    features: np.ndarray, targets: np.ndarray, cfg: ProbeConfig, metric: str, seed: int
) -> tuple[BaseEstimator, dict, float]:
    """Grid search on these rows, then the best candidate refitted on all of them, giving probabilities.

    An SVM's scores become probabilities by Platt scaling fitted on out-of-fold decisions (the same
    inner folds), not on the rows the SVM was fitted to.
    """
    counts = np.bincount(targets)
    smallest = counts[counts > 0].min()
    if smallest < cfg.cv:
        raise CompError(
            f"A class has only {smallest} training row(s) in a fold, fewer than probe.cv={cfg.cv} inner folds.",
            hint="Lower probe.cv (at least 2).",
        )
    inner = StratifiedKFold(cfg.cv, shuffle=True, random_state=seed)
    search = GridSearchCV(
        create_pipeline(cfg, seed),
        param_grid(cfg),
        scoring=SEARCH_SCORING.get(metric, "accuracy"),
        cv=inner,
        refit=False,
        n_jobs=cfg.n_jobs,
        error_score="raise",
    )
    try:
        search.fit(features, targets)
    except ValueError as exc:  # sklearn's InvalidParameterError included: a bad name or value in the grid
        raise CompError(
            f"probe.grid {cfg.grid} does not fit the {cfg.classifier} classifier: {exc}",
            hint=f"Use the arguments of {type(create_pipeline(cfg, seed)[-1]).__name__}, "
            f"e.g. {DEFAULT_GRIDS[cfg.classifier]}.",
        ) from None
    best = {name.removeprefix("clf__"): value for name, value in search.best_params_.items()}
    final = create_pipeline(cfg, seed).set_params(**search.best_params_)
    if cfg.classifier == "svm":
        final = CalibratedClassifierCV(final, method="sigmoid", cv=inner, ensemble=False)
    return final.fit(features, targets), best, float(search.best_score_)


def class_probabilities(model: BaseEstimator, features: np.ndarray, n_classes: int) -> np.ndarray:
    """rows x n_classes, with a zero column for a class the fold's training rows lacked."""
    probs = np.zeros((len(features), n_classes))
    probs[:, model.classes_] = model.predict_proba(features)
    return probs


# ----------------------------------------------------------------------------- the run


def check_output(folder: Path, from_run: str | None, force: bool) -> None:
    if from_run is not None and folder.resolve() == run_dir(from_run).resolve():
        raise CompError(
            f"The probe would write into run '{from_run}', whose weights it reads.",
            hint="Name the probe's run: --name NAME (or --set name=NAME).",
        )
    if any((f / "best.safetensors").exists() or (f / "last.pt").exists() for f in fold_dirs(folder).values()):
        raise CompError(
            f"{folder} holds a trained run; the probe's predictions would mix with its own.",
            hint="Name the probe's run: --name NAME (or --set name=NAME).",
        )
    if cv_file(folder).exists() and not force:
        raise CompError(f"{folder} already holds predictions.", hint="Pass --force to replace them, or --name NAME.")


def probe(
    config: Config, competition: Competition, from_run: str | None = None, name: str | None = None, force: bool = False
) -> ProbeResult:
    """Fit the probe on every fold; write runs/<name>/ (name: `name`, else config.name) as a run."""
    if competition.task == "multilabel":
        raise CompError(
            "comp probe fits single-label classifiers, but data.task is multilabel.",
            hint="Train the run instead (comp train), or set data.task to a single-label task.",
        )
    out = config.model_copy(update={"name": name or config.name})
    check_output(run_dir(out.name), from_run, force)
    source, backbones = plan(config, competition, from_run)
    # The probe run records what it really used: the source's model, image size and fold file.
    out = out.model_copy(
        update={
            "model": source.model,
            "seed": source.seed,
            "folds": source.folds,
            "data": out.data.model_copy(update={"image_size": source.data.image_size}),
        }
    )
    folds = load_folds(source, competition)
    metric, classes = config.predict.metric, competition.classes
    row = pd.Index(competition.train["id"])
    device = resolve_device(config.train.device)
    results, oof_tables, test_probs = {}, {}, []
    with Progress(console=console, transient=True) as progress, staged_outputs(run_dir(out.name)) as stage:
        for k, backbone in backbones.items():
            train_x, test_x = cached_features(
                backbone, competition, config, run_dir(out.name) / "features", device, progress
            )
            fit_ids = folds.loc[folds["fold"] != k, "id"].to_numpy()
            val_ids = folds.loc[folds["fold"] == k, "id"].to_numpy()
            classifier, best, search_score = fit_fold(
                train_x[row.get_indexer(fit_ids)],
                competition.class_indices(fit_ids, classes),
                out.probe,
                metric,
                out.seed,
            )
            val_probs = class_probabilities(classifier, train_x[row.get_indexer(val_ids)], len(classes))
            results[k] = FoldProbe(
                best,
                search_score,
                score(metric, competition.class_indices(val_ids, classes), val_probs, **config.predict.metric_params),
            )
            oof_tables[k] = probability_table(val_ids, val_probs, classes)
            test_probs.append(class_probabilities(classifier, test_x, len(classes)))
            write_predictions(table_file(fold_dir(stage, k), "oof"), oof_tables[k], classes, VIEWS, competition.task)
            write_predictions(
                table_file(fold_dir(stage, k), "test"),
                probability_table(competition.test["id"], test_probs[-1], classes),
                classes,
                VIEWS,
                competition.task,
            )
            write_json(fold_dir(stage, k) / "probe.json", {"best_params": best, "search_score": search_score})
            progress.console.print(  # each fold's result as it comes, above the progress bar
                f"fold {k}: {_params(best)} (inner CV {search_score:.4f}), OOF {metric} {results[k].score:.4f}",
                highlight=False,
            )
        oof_score, *_ = write_run_predictions(
            stage,
            oof_tables,
            np.mean(test_probs, 0),
            competition,
            classes,
            VIEWS,
            metric,
            config.predict.metric_params,
            source,
            probe={
                "classifier": out.probe.classifier,
                "from_run": from_run,
                "model": out.model.name,
                "best_params": {str(k): r.best_params for k, r in results.items()},
            },
        )
        save_classes(classes, classes_file(stage))
        save_config(out, config_file(stage))
    return ProbeResult(run_dir(out.name), metric, out.probe.classifier, results, oof_score)


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
