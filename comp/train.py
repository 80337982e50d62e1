"""Training: one model per fold, validated every epoch on the fold's held-out rows.

A fold folder holds best.safetensors (best weights by validation loss), last.pt (everything
needed to continue), metrics.csv (one row per epoch) and, once finished, summary.json.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader

from comp.augment import build_eval_transform, build_train_transform
from comp.config import Config, save_config
from comp.data import Competition, check_same_classes, load_classes, save_classes
from comp.dataset import ImageDataset, should_cache
from comp.device import amp_dtype, autocast, default_num_workers, resolve_device
from comp.errors import CompError
from comp.folds import load_folds
from comp.io import atomic_path, write_csv, write_json
from comp.models import count_parameters, create_model, normalization

console = Console()


@dataclass
class FoldResult:
    fold: int
    status: str  # trained | skipped
    best_epoch: int
    val_loss: float
    val_accuracy: float
    seconds: float


# ----------------------------------------------------------------------------- fold state

def fold_dir(config: Config, fold: int) -> Path:
    return config.run_dir / f"fold{fold}"


def fold_state(config: Config, fold: int) -> str:
    """new | interrupted | finished."""
    folder = fold_dir(config, fold)
    if (folder / "summary.json").exists():
        return "finished"
    if (folder / "last.pt").exists() or (folder / "metrics.csv").exists():
        return "interrupted"
    return "new"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- run folder

def prepare_run(config: Config, competition: Competition) -> None:
    """Write (or check) the run's config.yaml and classes.json."""
    run_dir = config.run_dir
    classes_path = run_dir / "classes.json"
    if classes_path.exists():
        check_same_classes(load_classes(classes_path), competition.classes, f"Run {run_dir}")
    else:
        save_classes(competition.classes, classes_path)
    save_config(config, run_dir / "config.yaml")


# ----------------------------------------------------------------------------- data

def make_loaders(config: Config, competition: Competition, folds: pd.DataFrame, fold: int, mean, std):
    index = {c: i for i, c in enumerate(competition.classes)}
    table = competition.train.set_index("id").loc[folds["id"]]
    targets = np.array([index[label] for label in table["label"]])
    is_val = (folds["fold"] == fold).to_numpy()
    if not is_val.any():
        raise CompError(f"Fold {fold} has no rows in {config.fold_file}: folds are 0..{folds['fold'].max()}.")
    paths = table["path"].to_numpy()
    cache = should_cache(config.data, len(paths))
    size = config.data.image_size
    train_set = ImageDataset(paths[~is_val], targets[~is_val],
                             build_train_transform(config.aug.phase1, size, mean, std), cache)
    val_set = ImageDataset(paths[is_val], targets[is_val], build_eval_transform(size, mean, std), cache)
    if config.train.batch_size > len(train_set):
        raise CompError(
            f"train.batch_size={config.train.batch_size} is larger than fold {fold}'s {len(train_set)} training rows.",
            hint="Lower train.batch_size.",
        )
    device = resolve_device(config.train.device)
    workers = config.train.num_workers
    workers = default_num_workers(device) if workers == "auto" else workers
    common = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    generator = torch.Generator().manual_seed(config.seed + fold)
    train_loader = DataLoader(train_set, batch_size=config.train.batch_size, shuffle=True, drop_last=True,
                              generator=generator, **common)
    val_loader = DataLoader(val_set, batch_size=config.predict.batch_size, shuffle=False, **common)
    return train_loader, val_loader


# ----------------------------------------------------------------------------- optimisation

def make_scheduler(config: Config, optimizer, steps_per_epoch: int):
    name = config.train.scheduler
    total = config.train.epochs * steps_per_epoch
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.train.lr, total_steps=total)
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise CompError(f"Unknown train.scheduler '{name}'.", hint="Use onecycle or none.")


def make_optimizer(config: Config, model):
    try:
        return create_optimizer_v2(model, opt=config.train.optimizer, lr=config.train.lr,
                                   weight_decay=config.train.weight_decay)
    except (AssertionError, ValueError) as exc:
        raise CompError(f"Unknown train.optimizer '{config.train.optimizer}' ({exc}).",
                        hint="Use adamw, adam or sgd.") from None


# ----------------------------------------------------------------------------- epochs

def train_one_epoch(model, loader, optimizer, scheduler, device, dtype, progress, task) -> float:
    model.train()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, dtype):
            loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach().float() * len(targets)  # no host sync per step
        seen += len(targets)
        progress.advance(task)
    return float(loss_sum) / max(seen, 1)


@torch.no_grad()
def evaluate(model, loader, device, dtype) -> tuple[float, float]:
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(device, dtype):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        correct += (logits.argmax(1) == targets).sum()
        seen += len(targets)
    return float(loss_sum) / seen, float(correct) / seen


# ----------------------------------------------------------------------------- checkpoints

def save_weights(model, path: Path, classes: list, epoch: int) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"classes": json.dumps(classes), "epoch": str(epoch)})


def save_state(path: Path, **state) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the same user-facing problem
        raise CompError(
            f"Cannot load {path} safely ({type(exc).__name__}): it is not a checkpoint written by comp, "
            "or it holds objects that would need unpickling.",
            hint="Delete it and retrain the fold with --force.",
        ) from None


# ----------------------------------------------------------------------------- a fold

def train_fold(config: Config, competition: Competition, folds: pd.DataFrame, fold: int,
               resume: bool = False) -> FoldResult:
    """Train one fold from scratch, or continue it from last.pt when `resume`."""
    folder = fold_dir(config, fold)
    seed_everything(config.seed + fold)
    device = resolve_device(config.train.device)
    dtype = amp_dtype(device, config.train.amp)
    model = create_model(config.model, len(competition.classes)).to(device)
    mean, std = normalization(model)
    train_loader, val_loader = make_loaders(config, competition, folds, fold, mean, std)
    optimizer = make_optimizer(config, model)
    scheduler = make_scheduler(config, optimizer, len(train_loader))

    start_epoch, best_loss, best_epoch, rows = 1, math.inf, 0, []
    if resume:
        state = load_state(folder / "last.pt")
        check_same_classes(state["classes"], competition.classes, f"Checkpoint {folder / 'last.pt'}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_loss, best_epoch = state["epoch"] + 1, state["best_loss"], state["best_epoch"]
        rows = pd.read_csv(folder / "metrics.csv").iloc[: state["epoch"]].to_dict("records")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)

    total, trainable = count_parameters(model)
    console.print(f"[bold]fold {fold}[/]: {config.model.name}, {total:,} parameters ({trainable:,} trainable), "
                  f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, {device}"
                  f"{', ' + str(dtype).replace('torch.', '') if dtype else ''}")
    started = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        for epoch in range(start_epoch, config.train.epochs + 1):
            epoch_start = time.perf_counter()
            task = progress.add_task(f"fold {fold} epoch {epoch}/{config.train.epochs}", total=len(train_loader))
            lr = optimizer.param_groups[0]["lr"]
            train_loss = train_one_epoch(model, train_loader, optimizer, scheduler, device, dtype, progress, task)
            val_loss, val_accuracy = evaluate(model, val_loader, device, dtype)
            progress.remove_task(task)
            if not math.isfinite(train_loss):
                raise CompError(
                    f"Training loss became {train_loss} in fold {fold}, epoch {epoch}: training diverged.",
                    hint="Lower train.lr; best.safetensors keeps the last good weights.",
                )
            rows.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_accuracy=val_accuracy,
                             lr=lr, seconds=round(time.perf_counter() - epoch_start, 2)))
            improved = val_loss < best_loss
            if improved:
                best_loss, best_epoch = val_loss, epoch
                save_weights(model, folder / "best.safetensors", competition.classes, epoch)
            write_csv(folder / "metrics.csv", pd.DataFrame(rows))
            save_state(folder / "last.pt", model=model.state_dict(), optimizer=optimizer.state_dict(),
                       scheduler=scheduler.state_dict(), epoch=epoch, best_loss=best_loss,
                       best_epoch=best_epoch, classes=competition.classes)
            console.print(f"fold {fold} epoch {epoch:>3}  lr {lr:.2e}  train {train_loss:.4f}  "
                          f"val {val_loss:.4f}  acc {val_accuracy:.4f}  {rows[-1]['seconds']:.1f}s"
                          f"{'  *' if improved else ''}", highlight=False)
    best = next(r for r in rows if r["epoch"] == best_epoch)
    result = FoldResult(fold, "trained", best_epoch, best["val_loss"], best["val_accuracy"],
                        round(sum(r["seconds"] for r in rows), 2))
    write_json(folder / "summary.json", asdict(result))
    console.print(f"fold {fold} done in {time.perf_counter() - started:.1f}s: best epoch {best_epoch}, "
                  f"val loss {best['val_loss']:.4f}, accuracy {best['val_accuracy']:.4f} -> {folder}")
    return result


def _finished_result(config: Config, fold: int) -> FoldResult:
    summary = json.loads((fold_dir(config, fold) / "summary.json").read_text())
    return FoldResult(**{**summary, "status": "skipped"})


def train(config: Config, competition: Competition, fold: int | str = "all",
          force: bool = False, resume: bool = False) -> list[FoldResult]:
    """Train one fold (`fold=K`) or every fold in order (`fold="all"`), protecting finished work."""
    folds = load_folds(config, competition)
    n_folds = int(folds["fold"].max()) + 1
    wanted = list(range(n_folds)) if fold == "all" else [int(fold)]
    for k in wanted:
        if not 0 <= k < n_folds:
            raise CompError(f"--fold {k} is out of range: {config.fold_file} has folds 0..{n_folds - 1}.")
    prepare_run(config, competition)
    results = []
    for k in wanted:
        state = "new" if force else fold_state(config, k)
        if state == "finished":
            if fold != "all":
                raise CompError(f"Fold {k} of run '{config.name}' is already trained ({fold_dir(config, k)}).",
                                hint="Pass --force to retrain it from scratch.")
            console.print(f"fold {k}: finished already, skipped")
            results.append(_finished_result(config, k))
            continue
        if state == "interrupted" and not resume:
            raise CompError(f"Fold {k} of run '{config.name}' was interrupted ({fold_dir(config, k)}).",
                            hint="Pass --resume to continue it, or --force to retrain it from scratch.")
        results.append(train_fold(config, competition, folds, k, resume=state == "interrupted"))
    return results
