"""The training loop, top to bottom: a fold's Trainer, its epochs, each batch's step, validation.

    create_trainer    the model as it runs (compiled, under DDP), optimizer, schedule, grad scaler, EMA, mixup
    fit               the epochs: augmentation phase, freezing, train_epoch, evaluate, end_epoch, files written
    train_epoch       the batches: forward_backward each, optimizer_step every train.grad_accum_steps
    forward_backward  to the device (augmented there, aug.device), mixup, forward, loss, backward
    optimizer_step    clip, step through the grad scaler, zero the gradients, per-step schedule, EMA
    evaluate          validation loss, accuracy and the monitored metric (over all DDP processes' rows)

What the loop shows goes to a Reporter (comp.training.reporter); what it keeps, to the fold's files
(comp.training.state.FoldFiles).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from comp.augment import ModelInput, create_batch_augments, phase_at
from comp.augment_batch import BatchAugment, batch_seed
from comp.config import Config, TrainConfig
from comp.device import NumericFormat, autocast, numeric_format
from comp.errors import CompError
from comp.metrics import accuracy, is_better
from comp.metrics import score as metric_score
from comp.models.factory import split_parameters
from comp.tasks import loss, probabilities
from comp.training.distributed import (
    broadcast_buffers,
    data_parallel,
    gather_rows,
    mean_over_processes,
    rank,
    unwrap,
    world_size,
)
from comp.training.loaders import EpochBatches
from comp.training.optim import Scheduler, create_optimizer, create_scheduler, monitor_metric, per_step
from comp.training.state import FoldFiles, Position

if TYPE_CHECKING:
    from comp.training.reporter import Reporter


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
    format: NumericFormat  # precision and memory format (train.amp, train.channels_last; auto resolved)
    inputs: ModelInput  # loader batches to the model's normalised input, on its device and memory format
    task: str  # comp.tasks: the loss and how validation reads the logits
    augments: dict[int, BatchAugment]  # per phase, its augmentation of training batches on the device (aug.device)

    @property
    def dtype(self) -> torch.dtype | None:
        return self.format.dtype

    @property
    def evaluated(self) -> nn.Module:
        """What validation runs and best.safetensors keeps: the EMA when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.forward)

    @property
    def evaluated_weights(self) -> dict[str, torch.Tensor]:
        return (self.ema.module if self.ema is not None else self.model).state_dict()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def create_trainer(
    config: Config, model: nn.Module, steps_per_epoch: int, num_classes: int, task: str, soft_targets: bool = False
) -> Trainer:
    """soft_targets: the training targets are probability rows (PhasedImages.soft_targets), not class indices."""
    cfg = config.train
    device = next(model.parameters()).device
    numerics = numeric_format(cfg.amp, cfg.channels_last, model, device, config.data.image_size)
    model.to(memory_format=numerics.memory_format)
    optimizer = create_optimizer(config, model)
    forward = data_parallel(
        torch.compile(model) if cfg.compile else model, find_unused_parameters=cfg.freeze_epochs > 0
    )  # a frozen backbone gets no gradients
    return Trainer(
        config,
        model,
        forward,
        optimizer,
        create_scheduler(config, optimizer, steps_per_epoch),
        torch.amp.GradScaler(device.type, enabled=numerics.dtype == torch.float16),  # fp16 needs loss scaling; bf16 not
        ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None,
        create_mixup(config, num_classes, task, soft_targets),
        device,
        numerics,
        ModelInput.of(model, device, numerics.memory_format),
        task,
        create_batch_augments(config.aug, rank(), world_size()),
    )


def create_mixup(
    config: Config, num_classes: int, task: str = "multiclass", soft_targets: bool = False
) -> Mixup | None:
    cfg = config.train
    if not (cfg.mixup_alpha or cfg.cutmix_alpha):
        return None
    if task == "multilabel":
        raise CompError(
            "train.mixup_alpha / train.cutmix_alpha mix one-label targets, but data.task is multilabel.",
            hint="Set train.mixup_alpha=0 and train.cutmix_alpha=0 for a multi-label competition.",
        )
    # Probability rows (soft pseudo-labels) come smoothed already (loaders.smoothed_rows); timm's multi_label
    # mode mixes such dense rows as they are (with no smoothing, its multi-label smoothing never applies).
    return Mixup(
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        prob=cfg.mix_prob,
        label_smoothing=0.0 if soft_targets else cfg.label_smoothing,
        num_classes=num_classes,
        multi_label=soft_targets,
    )


# ----------------------------------------------------------------------------- the epochs


def fit(
    trainer: Trainer, loaders: tuple[DataLoader, DataLoader], position: Position, files: FoldFiles, reporter: Reporter
) -> None:
    """Train from `position` to train.epochs, or until train.patience epochs bring no better train.monitor."""
    config, cfg = trainer.config, trainer.config.train
    train_loader, val_loader = loaders
    batches: EpochBatches = train_loader.batch_sampler
    clock = EpochClock(position)

    def checkpoint() -> None:  # mid-epoch: last.pt, with the time spent so far
        clock.lap()
        files.write_checkpoint(trainer, position)

    while not finished(position, cfg):
        epoch = position.epoch + 1
        phase = phase_at(config.aug, epoch)
        if phase != (position.rows[-1]["phase"] if position.rows else 1):
            reporter.note(f"augmentation phase 2 (aug.phase2) from epoch {epoch}")
        frozen = epoch <= cfg.freeze_epochs
        set_backbone_frozen(trainer.model, frozen)
        if position.batch == 0:
            position.lr = trainer.optimizer.param_groups[0]["lr"]
        batches.set_epoch(epoch, phase, start=position.batch)
        reporter.start_epoch(epoch, phase, frozen, batches.batches_per_epoch, position.batch)

        train_epoch(trainer, train_loader, position, files.fold, epoch, checkpoint, reporter)
        metrics = evaluate(
            trainer.evaluated,
            val_loader,
            trainer.inputs,
            trainer.dtype,
            cfg.monitor,
            trainer.task,
            config.predict.metric_params,
        )

        clock.lap()
        train_loss = float(np.mean(position.losses))
        row = dict(epoch=epoch, phase=phase, lr=position.lr, train_loss=train_loss, **metrics)
        row["seconds"] = round(position.seconds, 2)
        if config.data.pseudo_labels is not None:  # marked: this epoch trained on pseudo-labelled test images too
            row["pseudo_rows"] = train_loader.dataset.pseudo_rows
        improved = end_epoch(trainer, position, row)
        files.write_epoch(trainer, position, improved, last=finished(position, cfg))
        reporter.end_epoch(row, improved)
    if stopped_early(position, cfg.patience) and position.epoch < cfg.epochs:
        reporter.note(
            f"fold {files.fold}: early stop after epoch {position.epoch}: no better {cfg.monitor} "
            f"for {cfg.patience} epochs (train.patience)"
        )


class EpochClock:
    """The time spent on the epoch under way, across resumes: each lap adds the time since the last to
    position.seconds."""

    def __init__(self, position: Position):
        self.position, self.mark = position, time.perf_counter()

    def lap(self) -> None:
        now = time.perf_counter()
        self.position.seconds += now - self.mark
        self.mark = now


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    for param in split_parameters(model)[1]:
        param.requires_grad_(not frozen)


def end_epoch(trainer: Trainer, position: Position, row: dict) -> bool:
    """Record the epoch's row in `position` and step a per-epoch schedule. True: train.monitor improved."""
    monitor = trainer.config.train.monitor
    improved = position.best_score is None or is_better(monitor_metric(monitor), row[monitor], position.best_score)
    if improved:
        position.best_score, position.best_epoch = row[monitor], row["epoch"]
    if not per_step(trainer.scheduler):
        trainer.scheduler.step(row[monitor])
    position.rows.append(row)
    position.epoch, position.batch, position.losses, position.seconds = row["epoch"], 0, [], 0.0
    return improved


def finished(position: Position, cfg: TrainConfig) -> bool:
    return position.epoch >= cfg.epochs or stopped_early(position, cfg.patience)


def stopped_early(position: Position, patience: int | None) -> bool:
    return patience is not None and position.epoch - position.best_epoch >= patience


# ----------------------------------------------------------------------------- an epoch's batches


def train_epoch(
    trainer: Trainer,
    loader: DataLoader,
    position: Position,
    fold: int,
    epoch: int,
    checkpoint: Callable[[], None],
    reporter: Reporter,
) -> None:
    """Train from position.batch to the end of the epoch; checkpoint() every train.checkpoint_every_steps steps."""
    cfg = trainer.config.train
    n_batches = loader.batch_sampler.batches_per_epoch
    mixing = mixes(trainer.config, epoch)
    phase = phase_at(trainer.config.aug, epoch)
    train_mode(trainer.model)
    pending: list[torch.Tensor] = []  # losses stay on the device until a sync point
    batch = position.batch
    for images, targets in loader:
        share = accumulation_size(batch, n_batches, cfg.grad_accum_steps)
        augment = device_augment(trainer, phase, fold, epoch, batch)
        pending.append(forward_backward(trainer, images, targets, mixing, share, augment))
        batch += 1
        if batch % cfg.grad_accum_steps == 0 or batch == n_batches:
            position.step += 1
            optimizer_step(trainer, position.step)
            position.batch = batch
            every = cfg.checkpoint_every_steps
            if every and position.step % every == 0 and batch < n_batches:
                check_finite(trainer, position, pending, fold, epoch, n_batches)
                checkpoint()
        reporter.end_batch()
    check_finite(trainer, position, pending, fold, epoch, n_batches)


def device_augment(
    trainer: Trainer, phase: int, fold: int, epoch: int, batch: int
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The phase's augmentation of training batch `batch` (0-based) of `epoch` on the device, if it has one; drawn
    from (seed, fold, epoch, batch) alone, so a resumed epoch repeats it."""
    augment = trainer.augments.get(phase)
    return augment.seeded(batch_seed(trainer.config.train_seed, fold, epoch, batch)) if augment else None


def forward_backward(
    trainer: Trainer,
    images: torch.Tensor,
    targets: torch.Tensor,
    mixing: bool = False,
    share: int = 1,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One batch to the device (augmented there by `augment`, then normalised), mixed, forward, loss, and the
    backward pass of loss / share (the number of batches whose gradients one optimizer step sums). Returns the
    loss, left on the device."""
    images = trainer.inputs(images, augment)
    targets = targets.to(trainer.device, non_blocking=True)
    if mixing:
        images, targets = trainer.mixup(images, targets)
    with autocast(trainer.device, trainer.dtype):
        value = training_loss(trainer.forward(images), targets, trainer.config.train.label_smoothing, trainer.task)
    trainer.scaler.scale(value / share).backward()
    return value.detach()


def optimizer_step(trainer: Trainer, step: int) -> None:
    """Clip (train.clip_grad), step through the grad scaler, zero the gradients, then schedule and EMA move."""
    clip = trainer.config.train.clip_grad
    if clip:
        trainer.scaler.unscale_(trainer.optimizer)
        nn.utils.clip_grad_norm_(trainer.model.parameters(), clip)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    if per_step(trainer.scheduler):
        trainer.scheduler.step()
    if trainer.ema is not None:
        trainer.ema.update(trainer.model, step=step)


def training_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float, task: str) -> torch.Tensor:
    """The task's loss (comp.tasks.loss). Single-label probability rows (mixed by Mixup, or soft pseudo-labels)
    come already smoothed: cross-entropy against them as they are."""
    if targets.ndim == 2 and task != "multilabel":
        return SoftTargetCrossEntropy()(logits, targets)
    return loss(logits, targets, task, label_smoothing)


def mixes(config: Config, epoch: int) -> bool:
    """Whether mixup/cutmix is on in `epoch` (it stops at train.mixup_off_epoch)."""
    cfg = config.train
    return bool(cfg.mixup_alpha or cfg.cutmix_alpha) and (cfg.mixup_off_epoch is None or epoch < cfg.mixup_off_epoch)


def train_mode(model: nn.Module) -> None:
    """Training mode, except that a frozen backbone's batch norms keep their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            module.eval()


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
            "training diverged. Nothing from there on was saved: last.pt keeps the last good checkpoint and "
            "best.safetensors the best weights it had seen.",
            hint=f"Lower train.lr and continue: comp train --fold {fold} --resume --force --set train.lr=...; "
            "or set train.clip_grad, or turn train.amp off.",
        )
    position.losses.extend(values)


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    inputs: ModelInput,
    dtype,
    monitor: str,
    task: str = "multiclass",
    params: dict | None = None,
) -> dict[str, float]:
    """val_loss (the task's loss), val_accuracy and, when train.monitor is another metric, that one (with the
    metric's predict.metric_params, and default decision thresholds).

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
    probs = probabilities(all_logits, task).double().numpy()
    scores = {
        "val_loss": loss(all_logits, all_targets, task).item(),
        "val_accuracy": accuracy(all_targets.numpy(), probs),
    }
    if monitor not in scores:
        scores[monitor] = metric_score(monitor_metric(monitor), all_targets.numpy(), probs, **(params or {}))
    return scores
