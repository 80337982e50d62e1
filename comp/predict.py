"""Prediction: each trained fold predicts its out-of-fold rows and the test set, with the same views."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import Progress
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from comp.augment import build_eval_transform
from comp.config import Config
from comp.data import Competition, check_same_classes, column_name, load_classes
from comp.dataset import ImageDataset
from comp.device import amp_dtype, autocast, resolve_device
from comp.errors import CompError
from comp.folds import load_folds
from comp.io import read_parquet_metadata, write_json, write_parquet
from comp.models import create_model, normalization
from comp.train import fold_dir, fold_state
from comp.tta import predict_views, resolve_views

console = Console()


@dataclass
class PredictResult:
    run_dir: Path
    views: list[str]
    folds: dict[int, float]
    oof_score: float


# ----------------------------------------------------------------------------- prediction tables

def probability_table(ids, probs: np.ndarray, classes: list) -> pd.DataFrame:
    table = pd.DataFrame(probs, columns=[column_name(c) for c in classes])
    table.insert(0, "id", list(ids))
    return table


def write_predictions(path: Path, table: pd.DataFrame, classes: list, views: list[str]) -> None:
    """Prediction files carry their class list, so they can never be read against other classes."""
    write_parquet(path, table, metadata={"classes": json.dumps(classes), "views": json.dumps(views)})


def read_predictions(path: Path) -> tuple[pd.DataFrame, list]:
    """A prediction table indexed by id, and its class list."""
    if not path.exists():
        raise CompError(f"{path} not found.", hint="Run `comp predict` for that run first.")
    classes = json.loads(read_parquet_metadata(path)["classes"])
    return pd.read_parquet(path).set_index("id"), classes


def accuracy(table: pd.DataFrame, labels: pd.Series, classes: list) -> float:
    """Share of rows whose most probable class is the true label (rows aligned by id)."""
    predicted = np.asarray(classes, dtype=object)[table[[column_name(c) for c in classes]].to_numpy().argmax(1)]
    return float((predicted == labels.reindex(table.index).to_numpy()).mean())


# ----------------------------------------------------------------------------- models

def load_fold_model(config: Config, fold: int, classes: list, device: torch.device) -> torch.nn.Module:
    path = fold_dir(config, fold) / "best.safetensors"
    with safe_open(str(path), framework="pt") as f:
        saved_classes = json.loads(f.metadata()["classes"])
    check_same_classes(saved_classes, classes, f"Checkpoint {path}")
    local = config.model.model_copy(update={"pretrained": False, "weights": None})
    model = create_model(local, len(classes))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


@torch.no_grad()
def predict_images(model, paths, transform, views, config: Config, device, progress=None, label="") -> np.ndarray:
    dataset = ImageDataset(paths, None, transform)
    loader = DataLoader(dataset, batch_size=config.predict.batch_size, shuffle=False,
                        pin_memory=device.type == "cuda")
    dtype = amp_dtype(device, config.train.amp)
    task = progress.add_task(label, total=len(loader)) if progress else None
    out = []
    for images in loader:
        with autocast(device, dtype):
            out.append(predict_views(model, images.to(device, non_blocking=True), views).cpu())
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    return torch.cat(out).numpy().astype(np.float64)


# ----------------------------------------------------------------------------- a run

def trained_folds(config: Config) -> list[int]:
    folds = sorted(int(p.name[4:]) for p in config.run_dir.glob("fold*") if p.name[4:].isdigit())
    return [k for k in folds if fold_state(config, k) == "finished"]


def predict(config: Config, competition: Competition, tta: bool = False) -> PredictResult:
    """Write every trained fold's oof/test tables, then the run's oof.parquet, test.parquet and cv.json."""
    run_dir = config.run_dir
    folds_done = trained_folds(config)
    if not folds_done:
        raise CompError(f"Run '{config.name}' has no trained folds in {run_dir}.",
                        hint="Train first: comp train --fold all.")
    classes = load_classes(run_dir / "classes.json")
    check_same_classes(classes, competition.classes, f"Run {run_dir}")
    views = resolve_views(config.predict.tta, tta)
    folds = load_folds(config, competition)
    train = competition.train.set_index("id")
    device = resolve_device(config.train.device)

    oof_tables, test_probs, fold_scores = [], [], {}
    with Progress(console=console, transient=True) as progress:
        for k in folds_done:
            model = load_fold_model(config, k, classes, device)
            transform = build_eval_transform(config.data.image_size, *normalization(model))
            val_ids = folds.loc[folds["fold"] == k, "id"]
            oof = probability_table(val_ids, predict_images(
                model, train.loc[val_ids, "path"], transform, views, config, device, progress, f"fold {k} oof"),
                classes)
            test = probability_table(competition.test["id"], predict_images(
                model, competition.test["path"], transform, views, config, device, progress, f"fold {k} test"),
                classes)
            write_predictions(fold_dir(config, k) / "oof.parquet", oof, classes, views)
            write_predictions(fold_dir(config, k) / "test.parquet", test, classes, views)
            fold_scores[k] = accuracy(oof.set_index("id"), train["label"], classes)
            console.print(f"fold {k}: OOF accuracy {fold_scores[k]:.4f} ({len(oof)} rows, views {', '.join(views)})")
            oof_tables.append(oof)
            test_probs.append(test.iloc[:, 1:].to_numpy())

    oof = pd.concat(oof_tables, ignore_index=True)
    test = probability_table(competition.test["id"], np.mean(test_probs, axis=0), classes)
    write_predictions(run_dir / "oof.parquet", oof, classes, views)
    write_predictions(run_dir / "test.parquet", test, classes, views)
    score = accuracy(oof.set_index("id"), train["label"], classes)
    write_json(run_dir / "cv.json", {"metric": "accuracy", "oof": score,
                                     "folds": {str(k): v for k, v in fold_scores.items()}, "views": views})
    return PredictResult(run_dir, views, fold_scores, score)
