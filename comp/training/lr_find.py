"""`comp lr-find`: the learning-rate range test (Leslie Smith, 2015; popularised by fastai).

The configured model and optimizer train on one fold's training rows while the learning rate
grows exponentially from `start_lr` to `end_lr`, one step per batch, with the training engine's
own step (precision, gradient clipping, channels_last, label smoothing); the whole network
trains (train.freeze_epochs does not apply) without mixup or EMA. The loss is smoothed with a
bias-corrected exponential moving average; the sweep stops early once the smoothed loss exceeds
`DIVERGENCE` times its minimum. The suggestion is the middle (in log scale) of the window of
learning rates over which the smoothed loss falls fastest: high enough to learn quickly, below
the point where the loss turns. Nothing of the run is touched: only runs/<name>/report/ is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Group
from rich.progress import Progress
from rich.text import Text

from comp.config import Config
from comp.console import console
from comp.data.competition import Competition
from comp.data.folds import load_folds
from comp.device import resolve_device
from comp.errors import CompError
from comp.io import atomic_path, write_csv
from comp.models.factory import create_model
from comp.runs import run_dir
from comp.training.loaders import create_loaders
from comp.training.loop import (
    Trainer,
    create_trainer,
    device_augment,
    forward_backward,
    optimizer_step,
    seed_everything,
    train_mode,
)

SMOOTHING = 0.9  # EMA factor: ~10 steps of memory keeps the lag behind the sweep small
DIVERGENCE = 4.0  # stop once the smoothed loss is this many times its minimum
WINDOW_DECADES = 0.5  # the width of the window over which the steepest fall is measured


@dataclass
class LRFindResult:
    curve: pd.DataFrame  # step, lr, loss, smoothed
    suggested_lr: float
    fastest_range: tuple[float, float]  # the window of learning rates where the smoothed loss falls fastest
    diverged: bool
    plot: Path
    table: Path

    def __rich__(self) -> Group:
        low, high = self.fastest_range
        stop = "stopped on divergence" if self.diverged else "no divergence"
        return Group(
            Text(f"{len(self.curve)} steps ({stop}); the smoothed loss falls fastest between {low:.2e} and {high:.2e}"),
            Text.from_markup(
                f"Suggested learning rate: [bold]{self.suggested_lr:.2e}[/] (--set train.lr="
                f"{self.suggested_lr:.2g})  plot -> {self.plot}"
            ),
        )


def lr_schedule(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    if not 0 < start_lr < end_lr:
        raise CompError(f"The sweep needs 0 < --start-lr < --end-lr, got {start_lr:g} and {end_lr:g}.")
    if steps < 10:
        raise CompError(f"--steps {steps} is too few for a range test.", hint="Use a few hundred, e.g. --steps 200.")
    return np.geomspace(start_lr, end_lr, steps)


def endless(loader) -> Iterator:
    """Batch after batch; each pass over the loader is a new epoch of the training sampler (new order)."""
    epoch = 1
    while True:
        loader.batch_sampler.set_epoch(epoch, phase=1)
        yield from loader
        epoch += 1


def sweep(trainer: Trainer, loader, lrs: np.ndarray, progress=None, fold: int = 0) -> tuple[pd.DataFrame, bool]:
    """Train one batch per learning rate; returns the recorded curve and whether it stopped on divergence.

    `lrs` are values of train.lr: each parameter group keeps its ratio to it (train.backbone_lr_scale). Batches are
    augmented as in phase 1 of training, on the device too (as epoch 0 of `fold`).
    """
    optimizer = trainer.optimizer
    ratios = [group["lr"] / trainer.config.train.lr for group in optimizer.param_groups]
    task = progress.add_task("lr sweep", total=len(lrs)) if progress else None
    train_mode(trainer.model)
    rows, average, lowest, diverged = [], 0.0, math.inf, False
    for step, (lr, (images, targets)) in enumerate(zip(lrs, endless(loader), strict=False)):
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        loss = forward_backward(trainer, images, targets, augment=device_augment(trainer, 1, fold, 0, step))
        optimizer_step(trainer, step)
        value = float(loss)
        if not math.isfinite(value):
            diverged = True
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        rows.append(dict(step=step, lr=float(lr), loss=value, smoothed=smoothed))
        lowest = min(lowest, smoothed)
        if progress:
            progress.advance(task)
        if smoothed > DIVERGENCE * lowest:
            diverged = True
            break
    return pd.DataFrame(rows, columns=["step", "lr", "loss", "smoothed"]), diverged


def fastest_fall(curve: pd.DataFrame) -> tuple[int, int]:
    """Row positions (start, end) of the window, WINDOW_DECADES wide, with the largest fall of the smoothed loss."""
    log_lr = np.log10(curve["lr"].to_numpy())
    per_decade = (len(log_lr) - 1) / max(log_lr[-1] - log_lr[0], 1e-12)
    width = max(2, round(WINDOW_DECADES * per_decade))
    if len(curve) <= width:
        raise CompError(
            f"The sweep stopped after {len(curve)} steps, too early to read a slope from.",
            hint="Lower --start-lr or raise --steps; a loss that diverges at once means the model or data are off.",
        )
    smoothed = curve["smoothed"].to_numpy()
    falls = smoothed[:-width] - smoothed[width:]
    start = int(np.argmax(falls))
    return start, start + width


def suggest(curve: pd.DataFrame) -> tuple[float, tuple[float, float]]:
    start, end = fastest_fall(curve)
    lrs = curve["lr"].to_numpy()
    return float(math.sqrt(lrs[start] * lrs[end])), (float(lrs[start]), float(lrs[end]))


def plot_curve(curve: pd.DataFrame, suggested: float, fastest: tuple[float, float], path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(curve["lr"], curve["loss"], color="0.75", linewidth=0.8, label="loss")
    ax.plot(curve["lr"], curve["smoothed"], color="C0", linewidth=2, label="smoothed loss")
    ax.axvspan(*fastest, color="C2", alpha=0.15, label="fastest fall")
    ax.axvline(suggested, color="C3", linestyle="--", label=f"suggested lr {suggested:.2e}")
    ax.set_xscale("log")
    smoothed = curve["smoothed"]
    falling = smoothed.iloc[: int(smoothed.argmin()) + 1]
    ax.set_ylim(max(0.0, smoothed.min() * 0.9 - 0.05), falling.max() * 1.1)  # the whole fall; the blow-up cut
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def lr_find(
    config: Config,
    competition: Competition,
    fold: int = 0,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 200,
) -> LRFindResult:
    """Run the range test on `fold`'s training rows; write report/lr_find.{png,csv} under the run."""
    lrs = lr_schedule(start_lr, end_lr, steps)
    folds = load_folds(config, competition)
    if fold not in set(folds["fold"]):
        raise CompError(f"--fold {fold} is not in {config.fold_file}: its folds are 0..{folds['fold'].max()}.")
    seed_everything(config.train_seed + fold)
    model = create_model(config.model, len(competition.classes)).to(resolve_device(config.train.device))
    train_loader, _ = create_loaders(config, competition, folds, fold)
    # The training step itself (amp, gradient scaling and clipping, channels_last), with a constant
    # schedule and no EMA: the sweep sets the learning rate before every step.
    plain = config.model_copy(update={"train": config.train.model_copy(update={"scheduler": "none", "ema": False})})
    trainer = create_trainer(
        plain, model, len(train_loader), len(competition.classes), competition.task, train_loader.dataset.soft_targets
    )
    with Progress(console=console, transient=True) as progress:
        curve, diverged = sweep(trainer, train_loader, lrs, progress, fold)
    suggested, fastest = suggest(curve)
    report = run_dir(config.name) / "report"
    table, plot = report / "lr_find.csv", report / "lr_find.png"
    write_csv(table, curve)
    plot_curve(
        curve,
        suggested,
        fastest,
        plot,
        f"{config.name}: {config.model.name}, {config.train.optimizer}, batch {config.train.batch_size}",
    )
    return LRFindResult(curve, suggested, fastest, diverged, plot, table)
