"""Training: one model per fold, validated every epoch on the fold's held-out rows.

A fold folder holds best.safetensors (the best weights by train.monitor; the EMA's when
train.ema is on), last.pt (everything needed to continue), metrics.csv (one row per epoch),
run.json (config, package versions, git commit, fold-file hash, resumes) and, once finished,
summary.json.

Resuming is exact. The model side's random generators (torch, NumPy, Python: initialisation,
dropout, mixup) are saved in last.pt. The data side needs no saved state: epoch e's batch order
and the seed each image is augmented from are drawn from (seed, fold, e) alone, so an epoch
resumed at batch b, or loaded by any number of workers, sees exactly the same batches.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from comp.augment import Augment, ModelInput, build_train_transform, phase_at, validate_aug
from comp.config import Config, save_config
from comp.data.competition import Competition, check_same_classes, load_classes, save_classes
from comp.data.dataset import ImageDataset, loader_options, should_cache
from comp.data.folds import fold_file_hash, load_folds
from comp.device import amp_dtype, autocast, model_memory_format, resolve_device
from comp.errors import CompError
from comp.io import write_csv, write_json
from comp.metrics import score as metric_score
from comp.models.factory import check_model_name, count_parameters, create_model, split_parameters
from comp.runs import fold_dir, fold_state, run_dir
from comp.training.checkpoint import (
    config_changes,
    load_state,
    new_record,
    now,
    read_record,
    record_resume,
    restore_rng,
    rng_state,
    save_state,
    save_weights,
    write_record,
)
from comp.training.distributed import (
    broadcast_buffers,
    check_batch_split,
    data_parallel,
    gather_rows,
    is_main_process,
    mean_over_processes,
    prepare_model,
    quiet_other_ranks,
    rank_device,
    shard_batch,
    unwrap,
    validation_sampler,
    world_size,
)
from comp.training.optim import (
    Scheduler,
    check_monitor,
    check_optimizer,
    check_schedule,
    fast_forward,
    make_optimizer,
    make_scheduler,
    monitor_mode,
    per_step,
)

console = Console()


@dataclass
class FoldResult:
    fold: int
    status: str  # trained | resumed | skipped
    best_epoch: int
    val_loss: float
    val_accuracy: float
    seconds: float


# ----------------------------------------------------------------------------- fold state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- run folder


def check_run_classes(config: Config, competition: Competition) -> None:
    classes_path = run_dir(config.name) / "classes.json"
    if classes_path.exists():
        check_same_classes(load_classes(classes_path), competition.classes, f"Run {run_dir(config.name)}")


def prepare_run(config: Config, competition: Competition) -> None:
    """Write (or check) the run's config.yaml and classes.json."""
    check_run_classes(config, competition)
    save_classes(competition.classes, run_dir(config.name) / "classes.json")
    save_config(config, run_dir(config.name) / "config.yaml")


# ----------------------------------------------------------------------------- data


class EpochBatches(Sampler):
    """One epoch's batches of dataset keys (index, phase, augmentation seed), from batch `start` on.

    Order and seeds are drawn from (seed, fold, epoch) alone. Batches are full (the remainder of
    an epoch is dropped), so batch norm never sees a batch of one. Under DDP each process takes its
    share of every batch, so the steps are the same for any number of processes.
    """

    def __init__(self, n_images: int, batch_size: int, seed: int, fold: int):
        self.n_images, self.batch_size, self.seed, self.fold = n_images, batch_size, seed, fold
        self.epoch, self.phase, self.start = 1, 1, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n_images // self.batch_size

    def set_epoch(self, epoch: int, phase: int, start: int = 0) -> None:
        self.epoch, self.phase, self.start = epoch, phase, start

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.fold, self.epoch])
        order = rng.permutation(self.n_images)
        seeds = rng.integers(2**32, size=self.n_images)
        for b in range(self.start, self.batches_per_epoch):
            rows = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(int(i), self.phase, int(seeds[i])) for i in shard_batch(rows)]


class PhasedImages(Dataset):
    """Training images under their phase's augmentation, each augmented from its own seed."""

    def __init__(self, images: ImageDataset, augments: dict[int, Augment]):
        self.images, self.augments = images, augments

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int, int]):
        index, phase, seed = key
        return self.images.sample(index, self.augments[phase](self.images.image(index), seed))


def make_loaders(config: Config, competition: Competition, folds: pd.DataFrame, fold: int):
    """(train, val) DataLoaders of a fold, giving uint8 image batches; the train loader's batch_sampler is an
    EpochBatches."""
    index = {c: i for i, c in enumerate(competition.classes)}
    table = competition.train.set_index("id").loc[folds["id"]]
    targets = np.array([index[label] for label in table["label"]])
    is_val = (folds["fold"] == fold).to_numpy()
    paths = table["path"].to_numpy()
    cache = should_cache(config.data, len(paths), paths[0])
    size = config.data.image_size
    phases = {
        phase: build_train_transform(getattr(config.aug, f"phase{phase}"), size, f"aug.phase{phase}")
        for phase in (1, 2)
    }
    train_set = PhasedImages(ImageDataset(paths[~is_val], targets[~is_val], size, cache), phases)
    val_set = ImageDataset(paths[is_val], targets[is_val], size, cache)
    cfg = config.train
    common = loader_options(cfg, resolve_device(cfg.device))
    common.update(
        persistent_workers=cfg.persistent_workers and common["num_workers"] > 0,
        # Iterators draw a seed from this, not from torch's global generator (which resume restores).
        generator=torch.Generator().manual_seed(config.seed),
    )
    batches = EpochBatches(len(train_set), cfg.batch_size, config.seed, fold)
    return (
        DataLoader(train_set, batch_sampler=batches, **common),
        DataLoader(val_set, batch_size=config.predict.batch_size, sampler=validation_sampler(len(val_set)), **common),
    )


# ----------------------------------------------------------------------------- loss, freezing, mixing


def make_mixup(config: Config, num_classes: int) -> Mixup | None:
    cfg = config.train
    if not (cfg.mixup_alpha or cfg.cutmix_alpha):
        return None
    return Mixup(
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        prob=cfg.mix_prob,
        label_smoothing=cfg.label_smoothing,
        num_classes=num_classes,
    )


def mixes(config: Config, epoch: int) -> bool:
    """Whether mixup/cutmix is on in `epoch` (it stops at train.mixup_off_epoch)."""
    cfg = config.train
    return bool(cfg.mixup_alpha or cfg.cutmix_alpha) and (cfg.mixup_off_epoch is None or epoch < cfg.mixup_off_epoch)


def training_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    if targets.ndim == 2:  # mixed: soft targets, already smoothed by Mixup
        return SoftTargetCrossEntropy()(logits, targets)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    for param in split_parameters(model)[1]:
        param.requires_grad_(not frozen)


def train_mode(model: nn.Module) -> None:
    """Training mode, except that a frozen backbone's batch norms keep their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            module.eval()


# ----------------------------------------------------------------------------- where training stands


@dataclass
class Position:
    """Everything about a fold's progress that last.pt keeps besides weights and optimizer."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the epoch under way (a mid-epoch checkpoint)
    step: int = 0  # optimizer steps taken in all
    lr: float = 0.0  # learning rate at the start of the epoch under way
    losses: list[float] = field(default_factory=list)  # training loss of each batch of the epoch under way
    seconds: float = 0.0  # time spent on the epoch under way
    best_score: float | None = None
    best_epoch: int = 0
    rows: list[dict] = field(default_factory=list)  # metrics.csv


@dataclass
class Trainer:
    """One fold's model and everything that updates it."""

    config: Config
    model: nn.Module  # the weights that are checkpointed
    forward: nn.Module  # what runs them: the model, or torch.compile(model); under DDP, wrapped in it
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    mixup: Mixup | None
    device: torch.device
    dtype: torch.dtype | None
    inputs: ModelInput  # loader batches to the model's normalised input, on its device and memory format

    @property
    def evaluated(self) -> nn.Module:
        """What validation runs and best.safetensors keeps: the EMA when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.forward)

    @property
    def evaluated_weights(self) -> dict[str, torch.Tensor]:
        return (self.ema.module if self.ema is not None else self.model).state_dict()

    def state(self, position: Position, classes: list) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": None if self.ema is None else self.ema.module.state_dict(),
            "position": asdict(position),
            "rng": rng_state(),
            "classes": classes,
            "config": self.config.to_dict(),
        }

    def optimizer_step(self, step: int) -> None:
        clip = self.config.train.clip_grad
        if clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if per_step(self.scheduler):
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, step=step)


def build_trainer(config: Config, model: nn.Module, steps_per_epoch: int, num_classes: int) -> Trainer:
    cfg = config.train
    device = next(model.parameters()).device
    dtype = amp_dtype(device, cfg.amp)
    memory_format = model_memory_format(cfg.channels_last)
    model.to(memory_format=memory_format)
    optimizer = make_optimizer(config, model)
    forward = data_parallel(
        torch.compile(model) if cfg.compile else model, find_unused_parameters=cfg.freeze_epochs > 0
    )  # a frozen backbone gets no gradients
    return Trainer(
        config,
        model,
        forward,
        optimizer,
        make_scheduler(config, optimizer, steps_per_epoch),
        torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),  # fp16 needs loss scaling; bf16 not
        ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None,
        make_mixup(config, num_classes),
        device,
        dtype,
        ModelInput.of(model, device, memory_format),
    )


def restore(trainer: Trainer, state: dict, forced_changes: list[str]) -> Position:
    """Load last.pt into a freshly built trainer; under changed config values (--force), keep the new ones.

    Changed values continue from the saved weights and optimizer moments (unless the optimizer itself
    changed), with this config's learning rates and decays, its schedule moved to the saved step.
    """
    try:
        trainer.model.load_state_dict(state["model"])
        if trainer.ema is not None:
            trainer.ema.module.load_state_dict(state["ema"] if state["ema"] is not None else state["model"])
        if not forced_changes:
            trainer.optimizer.load_state_dict(state["optimizer"])
            trainer.scheduler.load_state_dict(state["scheduler"])
        elif state["config"]["train"]["optimizer"] == trainer.config.train.optimizer:
            fresh = [{k: v for k, v in g.items() if k != "params"} for g in trainer.optimizer.param_groups]
            trainer.optimizer.load_state_dict(state["optimizer"])
            for group, values in zip(trainer.optimizer.param_groups, fresh, strict=True):
                group.update(values)
    except (RuntimeError, ValueError) as exc:
        raise CompError(
            f"last.pt does not fit the model and optimizer as now configured: {str(exc).splitlines()[0]}",
            hint="Resume with the model settings it was trained with, or retrain with --force.",
        ) from None
    if state["scaler"] and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(state["scaler"])
    position = Position(**state["position"])
    if forced_changes:
        fast_forward(trainer.scheduler, position.step)
    restore_rng(state["rng"])
    return position


# ----------------------------------------------------------------------------- an epoch


def accumulation_size(batch: int, n_batches: int, accum: int) -> int:
    """How many batches share the optimizer step that `batch` (0-based) contributes to."""
    first = batch // accum * accum
    return min(accum, n_batches - first)


def check_finite(
    trainer: Trainer, position: Position, pending: list[torch.Tensor], fold: int, epoch: int, n_batches: int
) -> None:
    """A sync point: move the batches' losses to the host; stop at a loss or weight that is inf or nan."""
    # Under DDP, every process gets the whole batch's loss (the mean of the shares), so all stop together.
    values = mean_over_processes(torch.stack(pending).float()).cpu().tolist() if pending else []
    pending.clear()
    bad = next((i for i, value in enumerate(values) if not math.isfinite(value)), None)
    weights_finite = bool(torch.stack([p.isfinite().all() for p in trainer.model.parameters()]).all())
    if bad is not None or not weights_finite:
        step = len(position.losses) + (bad + 1 if bad is not None else len(values))
        what = f"Training loss became {values[bad]}" if bad is not None else "The weights became inf or nan"
        raise CompError(
            f"{what} in fold {fold}, epoch {epoch}, {'' if bad is not None else 'by '}step {step} of {n_batches}: "
            "training diverged. Nothing from "
            "there on was saved: last.pt keeps the last good checkpoint and best.safetensors the best weights so far.",
            hint=f"Lower train.lr and continue: comp train --fold {fold} --resume --force --set train.lr=...; "
            "or set train.clip_grad, or turn train.amp off.",
        )
    position.losses.extend(values)


def train_epoch(
    trainer: Trainer, loader: DataLoader, position: Position, fold: int, epoch: int, save_checkpoint, advance
) -> None:
    """Train from position.batch to the end of the epoch; save_checkpoint() every checkpoint_every_steps."""
    cfg = trainer.config.train
    n_batches = loader.batch_sampler.batches_per_epoch
    mixing = mixes(trainer.config, epoch)
    train_mode(trainer.model)
    pending: list[torch.Tensor] = []  # losses stay on the device until a sync point
    batch = position.batch
    for images, targets in loader:
        images = trainer.inputs(images)
        targets = targets.to(trainer.device, non_blocking=True)
        if mixing:
            images, targets = trainer.mixup(images, targets)
        with autocast(trainer.device, trainer.dtype):
            loss = training_loss(trainer.forward(images), targets, cfg.label_smoothing)
        trainer.scaler.scale(loss / accumulation_size(batch, n_batches, cfg.grad_accum_steps)).backward()
        pending.append(loss.detach())
        batch += 1
        if batch % cfg.grad_accum_steps == 0 or batch == n_batches:
            position.step += 1
            trainer.optimizer_step(position.step)
            position.batch = batch
            every = cfg.checkpoint_every_steps
            if every and position.step % every == 0 and batch < n_batches:
                check_finite(trainer, position, pending, fold, epoch, n_batches)
                save_checkpoint()
        advance()
    check_finite(trainer, position, pending, fold, epoch, n_batches)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, inputs: ModelInput, dtype, monitor: str) -> dict[str, float]:
    """val_loss, val_accuracy and, when train.monitor is another metric, that one.

    Under DDP each process evaluates its share of the rows with rank 0's weights, and all get the metrics of all rows.
    """
    broadcast_buffers(model)
    model.eval()
    logits, targets = [], []
    for images, labels in loader:
        with autocast(inputs.device, dtype):
            logits.append(model(inputs(images)).float())
        targets.append(labels)
    all_logits, all_targets = gather_rows(torch.cat(logits).cpu()), gather_rows(torch.cat(targets))
    scores = {
        "val_loss": F.cross_entropy(all_logits, all_targets).item(),
        "val_accuracy": (all_logits.argmax(1) == all_targets).double().mean().item(),
    }
    if monitor not in scores:
        scores[monitor] = metric_score(
            monitor.removeprefix("val_"), all_targets.numpy(), all_logits.softmax(1).double().numpy()
        )
    return scores


def is_better(score: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return score < best if monitor_mode(monitor) == "min" else score > best


def stopped_early(position: Position, patience: int | None) -> bool:
    return patience is not None and position.epoch - position.best_epoch >= patience


# ----------------------------------------------------------------------------- display

# The per-epoch lines: (metrics.csv column, heading, width, format); the monitored metric joins when it is another.
COLUMNS = [
    ("epoch", "epoch", 5, ""),
    ("phase", "phase", 5, ""),
    ("lr", "lr", 9, ".2e"),
    ("train_loss", "train loss", 10, ".4f"),
    ("val_loss", "val loss", 8, ".4f"),
    ("val_accuracy", "val acc", 7, ".4f"),
]


def display_columns(monitor: str) -> list[tuple[str, str, int, str]]:
    extra = [] if monitor in {c[0] for c in COLUMNS} else [(monitor, monitor, len(monitor), ".4f")]
    return [*COLUMNS, *extra, ("seconds", "time (s)", 8, ".1f")]


def header_line(monitor: str) -> str:
    return "  ".join(f"{title:>{width}}" for _, title, width, _ in display_columns(monitor))


def epoch_line(row: dict, monitor: str, improved: bool) -> str:
    line = "  ".join(f"{row[key]:>{width}{spec}}" for key, _, width, spec in display_columns(monitor))
    return line + ("  * best" if improved else "")


def results_table(results: list[FoldResult]) -> Table:
    table = Table("fold", "status", "best epoch", "val loss", "val accuracy", "time", title="Folds")
    for r in results:
        table.add_row(
            str(r.fold), r.status, str(r.best_epoch), f"{r.val_loss:.4f}", f"{r.val_accuracy:.4f}", f"{r.seconds:.0f}s"
        )
    return table


def summary_writer_class() -> type:
    """TensorBoard's SummaryWriter; tensorboard is an optional extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CompError(
            "train.tensorboard is on, but the tensorboard package is not installed.",
            hint="pip install 'comp[tensorboard]', or set train.tensorboard: false.",
        ) from None
    return SummaryWriter


def open_tensorboard(folder: Path, purge_step: int):
    # purge_step: events from the part of training being redone after a resume are dropped
    return summary_writer_class()(log_dir=str(folder / "tb"), purge_step=purge_step)


# ----------------------------------------------------------------------------- a fold


def train_fold(
    config: Config, competition: Competition, folds: pd.DataFrame, fold: int, resume: bool = False, force: bool = False
) -> FoldResult:
    """Train one fold from scratch, or continue it from last.pt when `resume` (with changed values: `force`)."""
    cfg = config.train
    folder = fold_dir(run_dir(config.name), fold)
    state = resumable_state(config, competition, fold, force) if resume else None
    seed_everything(config.seed + fold)
    model = prepare_model(create_model(config.model, len(competition.classes)).to(rank_device(cfg.device)), cfg.sync_bn)
    train_loader, val_loader = make_loaders(config, competition, folds, fold)
    batches: EpochBatches = train_loader.batch_sampler
    steps_per_epoch = math.ceil(batches.batches_per_epoch / cfg.grad_accum_steps)
    trainer = build_trainer(config, model, steps_per_epoch, len(competition.classes))
    if is_main_process():  # under DDP, rank 0 alone writes files
        prepare_run(config, competition)
    position = open_fold(config, fold, trainer, state)
    tensorboard = open_tensorboard(folder, position.epoch + 1) if cfg.tensorboard and is_main_process() else None

    mark = time.perf_counter()

    def lap() -> None:  # time spent on the epoch under way, across resumes
        nonlocal mark
        position.seconds += time.perf_counter() - mark
        mark = time.perf_counter()

    def save_checkpoint() -> None:
        lap()
        if is_main_process():
            save_state(folder / "last.pt", trainer.state(position, competition.classes))

    total, trainable = count_parameters(model)
    precision = f", {str(trainer.dtype).replace('torch.', '')}" if trainer.dtype else ""
    console.print(
        f"[bold]fold {fold}[/]: {config.model.name}, {total:,} parameters ({trainable:,} trainable), "
        f"{len(train_loader.dataset)} train / "
        f"{len(val_loader.dataset)} val images, {trainer.device}{precision}"
        f"{f', DDP over {world_size()} processes' if world_size() > 1 else ''}"
        f"{', EMA' if trainer.ema else ''}",
        highlight=False,
    )
    console.print(header_line(cfg.monitor), style="bold", highlight=False)
    started = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        while position.epoch < cfg.epochs and not stopped_early(position, cfg.patience):
            epoch = position.epoch + 1
            phase = phase_at(config.aug, epoch)
            if phase != (position.rows[-1]["phase"] if position.rows else 1):
                progress.console.print(f"augmentation phase 2 (aug.phase2) from epoch {epoch}", highlight=False)
            frozen = epoch <= cfg.freeze_epochs
            set_backbone_frozen(model, frozen)
            if position.batch == 0:
                position.lr = trainer.optimizer.param_groups[0]["lr"]
            batches.set_epoch(epoch, phase, start=position.batch)
            task = progress.add_task(
                f"fold {fold} epoch {epoch}/{cfg.epochs} phase {phase}{' (backbone frozen)' if frozen else ''}",
                total=batches.batches_per_epoch,
                completed=position.batch,
            )
            train_epoch(
                trainer, train_loader, position, fold, epoch, save_checkpoint, lambda task=task: progress.advance(task)
            )
            metrics = evaluate(trainer.evaluated, val_loader, trainer.inputs, trainer.dtype, cfg.monitor)
            progress.remove_task(task)
            lap()
            row = dict(
                epoch=epoch,
                phase=phase,
                lr=position.lr,
                train_loss=float(np.mean(position.losses)),
                **metrics,
                seconds=round(position.seconds, 2),
            )
            improved = end_epoch(trainer, position, folder, competition.classes, row)
            progress.console.print(epoch_line(row, cfg.monitor, improved), highlight=False)
            if tensorboard is not None:
                for key in ("train_loss", "val_loss", "val_accuracy", "lr", cfg.monitor):
                    tensorboard.add_scalar(key, row[key], epoch)
                tensorboard.flush()
        if stopped_early(position, cfg.patience) and position.epoch < cfg.epochs:
            console.print(
                f"fold {fold}: early stop after epoch {position.epoch}: no better {cfg.monitor} "
                f"for {cfg.patience} epochs (train.patience)",
                highlight=False,
            )
    if tensorboard is not None:
        tensorboard.close()

    best = next(r for r in position.rows if r["epoch"] == position.best_epoch)
    result = FoldResult(
        fold,
        "resumed" if state is not None else "trained",
        position.best_epoch,
        best["val_loss"],
        best["val_accuracy"],
        round(sum(r["seconds"] for r in position.rows), 2),
    )
    if is_main_process():
        record = read_record(folder)
        record["finished"] = now()
        write_record(folder, record)
        write_json(folder / "summary.json", asdict(result))  # the fold is finished once this exists
    console.print(
        f"fold {fold} done in {time.perf_counter() - started:.1f}s: best epoch {position.best_epoch}, "
        f"{cfg.monitor} {position.best_score:.4f} -> {folder}",
        highlight=False,
    )
    return result


def open_fold(config: Config, fold: int, trainer: Trainer, state: dict | None) -> Position:
    """Continue from last.pt (recorded in run.json), or start the fold folder afresh."""
    folder = fold_dir(run_dir(config.name), fold)
    if state is None:
        if is_main_process():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            write_record(folder, new_record(config, fold))
        return Position()
    changes = config_changes(state["config"], config.to_dict())
    position = restore(trainer, state, changes)
    if is_main_process():
        record_resume(folder, config, position.epoch, position.batch, changes)
        (folder / "summary.json").unlink(missing_ok=True)  # a finished fold continued (--resume --force)
    console.print(
        f"fold {fold}: resuming after epoch {position.epoch}"
        f"{f', batch {position.batch}' if position.batch else ''}"
        f"{' with changed values: ' + '; '.join(changes) if changes else ''}",
        highlight=False,
    )
    return position


def end_epoch(trainer: Trainer, position: Position, folder: Path, classes: list, row: dict) -> bool:
    """Keep the best weights, step a per-epoch schedule, write metrics.csv, then last.pt. True: a new best."""
    monitor = trainer.config.train.monitor
    improved = is_better(row[monitor], position.best_score, monitor)
    if improved:
        position.best_score, position.best_epoch = row[monitor], row["epoch"]
        if is_main_process():
            save_weights(trainer.evaluated_weights, folder / "best.safetensors", classes, row["epoch"])
    if not per_step(trainer.scheduler):
        trainer.scheduler.step(row[monitor])
    position.rows.append(row)
    position.epoch, position.batch, position.losses, position.seconds = row["epoch"], 0, [], 0.0
    if is_main_process():
        write_csv(folder / "metrics.csv", pd.DataFrame(position.rows))
        save_state(folder / "last.pt", trainer.state(position, classes))  # the commit point
    return improved


def resumable_state(config: Config, competition: Competition, fold: int, force: bool, mmap: bool = False):
    """last.pt of an interrupted fold, checked: same classes, and same config unless `force`. None: no last.pt."""
    path = fold_dir(run_dir(config.name), fold) / "last.pt"
    if not path.exists():
        return None
    state = load_state(path, mmap=mmap)
    check_same_classes(state["classes"], competition.classes, f"Checkpoint {path}")
    changes = config_changes(state["config"], config.to_dict())
    if changes and not force:
        raise CompError(
            f"Fold {fold} of run '{config.name}' was trained with another config; resuming would mix the two. "
            f"Differences (saved -> now): {'; '.join(changes)}.",
            hint="Resume with the saved config (runs/<name>/fold<k>/run.json holds it), or pass --force to continue "
            "from the saved weights and optimizer state with the new values (recorded in run.json).",
        )
    return state


# ----------------------------------------------------------------------------- the fold loop


def plan_fold(config: Config, fold: int, one_fold: bool, force: bool, resume: bool) -> str:
    """train | resume | skip for one fold, or a CompError when its work would be lost."""
    state = fold_state(run_dir(config.name), fold)
    folder = fold_dir(run_dir(config.name), fold)
    if state == "new" or (force and not resume):
        return "train"
    if state == "interrupted":
        if resume:
            return "resume"
        raise CompError(
            f"Fold {fold} of run '{config.name}' was interrupted ({folder}).",
            hint="Pass --resume to continue it, or --force to retrain it from scratch.",
        )
    if force:  # finished, --resume --force: continue it with the changed values
        return "resume"
    if not one_fold:
        console.print(f"fold {fold}: finished already, skipped")
        return "skip"
    raise CompError(
        f"Fold {fold} of run '{config.name}' is already trained ({folder}).",
        hint="Pass --force to retrain it from scratch, or --resume --force to continue training it "
        "with changed values (e.g. more epochs).",
    )


def check_before_training(
    config: Config, competition: Competition, folds: pd.DataFrame, plan: dict[int, str], force: bool
) -> None:
    """Everything that can be refused, refused before any file is written."""
    cfg = config.train
    check_model_name(config.model.name)
    check_optimizer(cfg.optimizer)
    check_monitor(cfg.monitor)
    check_batch_split(cfg.batch_size, world_size())
    validate_aug(config.aug, config.data.image_size)
    check_run_classes(config, competition)
    if (cfg.mixup_alpha or cfg.cutmix_alpha) and cfg.batch_size % 2:
        raise CompError(
            f"Mixup and cutmix pair each image with another: train.batch_size={cfg.batch_size} must be even.",
            hint="Use an even train.batch_size, or set train.mixup_alpha and cutmix_alpha to 0.",
        )
    check_schedule(cfg)
    if cfg.tensorboard:
        summary_writer_class()
    digest = fold_file_hash(config)
    for k, action in plan.items():
        n_train = int((folds["fold"] != k).sum())
        if action != "skip" and cfg.batch_size > n_train:
            raise CompError(
                f"train.batch_size={cfg.batch_size} is larger than fold {k}'s {n_train} training rows.",
                hint="Lower train.batch_size.",
            )
        if action == "resume":
            resumable_state(config, competition, k, force, mmap=True)
    for k in range(int(folds["fold"].max()) + 1):
        record = read_record(fold_dir(run_dir(config.name), k))
        retrained = plan.get(k) == "train"
        if record and not retrained and record["fold_file_sha256"] != digest:
            raise CompError(
                f"{config.fold_file} changed since fold {k} of run '{config.name}' was trained on it (sha256 "
                f"{record['fold_file_sha256'][:12]}, now {digest[:12]}): mixing fold assignments would leak "
                "validation rows into training.",
                hint="Start a new run (--set name=...), or retrain every fold: comp train --fold all --force.",
            )


def plan_training(
    config: Config, competition: Competition, fold: int | str, force: bool, resume: bool
) -> tuple[pd.DataFrame, dict[int, str]]:
    """The fold table and what to do with each wanted fold (train | resume | skip), after every check."""
    folds = load_folds(config, competition)
    n_folds = int(folds["fold"].max()) + 1
    wanted = list(range(n_folds)) if fold == "all" else [int(fold)]
    for k in wanted:
        if not 0 <= k < n_folds:
            raise CompError(f"--fold {k} is out of range: {config.fold_file} has folds 0..{n_folds - 1}.")
    plan = {k: plan_fold(config, k, fold != "all", force, resume) for k in wanted}
    check_before_training(config, competition, folds, plan, force)
    return folds, plan


def train(
    config: Config, competition: Competition, fold: int | str = "all", force: bool = False, resume: bool = False
) -> list[FoldResult]:
    """Train one fold (`fold=K`) or every fold in order (`fold="all"`), protecting finished work."""
    quiet_other_ranks(console)  # under DDP, rank 0 reports
    folds, plan = plan_training(config, competition, fold, force, resume)
    results = []
    for k, action in plan.items():
        if action == "skip":
            summary = json.loads((fold_dir(run_dir(config.name), k) / "summary.json").read_text())
            results.append(FoldResult(**{**summary, "status": "skipped"}))
        else:
            results.append(train_fold(config, competition, folds, k, resume=action == "resume", force=force))
    return results
