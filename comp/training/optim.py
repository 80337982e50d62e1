"""Optimizers (timm's create_optimizer_v2) and learning-rate schedules (torch's) from the config.

Parameters fall into up to four groups: the head's and the backbone's (whose learning rate is
lr * train.backbone_lr_scale), each split into weights with decay and biases/norm weights
without it, as timm does. The head's groups come first, so param_groups[0]["lr"] is the
learning rate metrics.csv reports. Every schedule but plateau steps once per optimizer step;
plateau steps once per epoch on train.monitor.
"""

from __future__ import annotations

import difflib
import warnings

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from torch import nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

from comp.config import Config, TrainConfig
from comp.errors import CompError
from comp.metrics import METRICS
from comp.models.factory import split_parameters

Scheduler = LRScheduler | ReduceLROnPlateau
WARMUP_START = 0.01  # cosine warm-up starts at lr * this


# ----------------------------------------------------------------------------- optimizer


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Head / backbone x decay / no decay, each group with its own lr and weight_decay."""
    head = {id(p) for p in split_parameters(model)[0]}
    no_decay_names = getattr(model, "no_weight_decay", set)()
    grouped: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        part = "head" if id(param) in head else "backbone"
        decay = not (param.ndim <= 1 or name.endswith(".bias") or name in no_decay_names)
        grouped.setdefault((part, decay), []).append(param)
    scale = {"head": 1.0, "backbone": cfg.backbone_lr_scale}
    return [
        {
            "params": grouped[key],
            "name": key[0] + ("" if key[1] else "_no_decay"),
            "lr": cfg.lr * scale[key[0]],
            "weight_decay": cfg.weight_decay if key[1] else 0.0,
        }
        for key in [("head", True), ("head", False), ("backbone", True), ("backbone", False)]
        if key in grouped
    ]


def check_optimizer(name: str) -> None:
    known = list_optimizers()
    if name.lower().split("_")[-1] in known:  # timm also takes lookahead_<name>
        return
    close = difflib.get_close_matches(name.lower(), known, n=3)
    suggestion = f" Did you mean {', '.join(close)}?" if close else ""
    raise CompError(
        f"Unknown train.optimizer '{name}'.{suggestion}",
        hint="Use adamw, adam or sgd (train.momentum, train.nesterov), or another of timm's optimizers "
        '(python -c "import timm.optim; print(timm.optim.list_optimizers())").',
    )


# torch's fused kernels update every weight in one pass: resnet18's AdamW step takes 17 ms of CPU
# time instead of 80 ms with torch's default per-tensor loop (3% of a 32 px, batch-128 step).
FUSED_OPTIMIZERS = {"adam", "adamw", "sgd"}
FUSED_DEVICES = {"cpu", "cuda"}


def create_optimizer(config: Config, model: nn.Module, fused: bool | None = None) -> torch.optim.Optimizer:
    """timm's optimizer over param_groups; fused (None: wherever torch has the kernel) or torch's default."""
    cfg = config.train
    check_optimizer(cfg.optimizer)
    name = cfg.optimizer.lower()
    extra = {"nesterov": cfg.nesterov} if name == "sgd" else {}
    if fused is None:
        fused = name in FUSED_OPTIMIZERS and next(model.parameters()).device.type in FUSED_DEVICES
    if fused:
        extra["fused"] = True
    return create_optimizer_v2(
        param_groups(model, cfg),
        opt=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        **extra,
    )


# ----------------------------------------------------------------------------- the monitored metric


def monitor_names() -> list[str]:
    return ["val_loss", "val_accuracy", *(f"val_{name}" for name in METRICS if name != "accuracy")]


def check_monitor(name: str) -> None:
    if name not in monitor_names():
        close = difflib.get_close_matches(name, monitor_names(), n=1)
        raise CompError(
            f"Unknown train.monitor '{name}'.{f' Did you mean {close[0]}?' if close else ''}",
            hint=f"Use one of: {', '.join(monitor_names())}.",
        )


def monitor_metric(name: str) -> str:
    """The metric (comp.metrics) that train.monitor measures on the validation rows: val_loss is their log loss
    (the cross-entropy of the softmax), val_<metric> that metric."""
    return "log_loss" if name == "val_loss" else name.removeprefix("val_")


def monitor_mode(name: str) -> str:
    """ "min" when a lower value of the monitored metric is better, else "max"."""
    return "max" if METRICS[monitor_metric(name)].higher_is_better else "min"


# ----------------------------------------------------------------------------- schedule


def check_schedule(cfg: TrainConfig) -> None:
    if cfg.scheduler == "cosine" and cfg.warmup_epochs >= cfg.epochs:
        raise CompError(
            f"train.warmup_epochs={cfg.warmup_epochs} leaves no epoch of the {cfg.epochs} "
            "(train.epochs) for the cosine decay.",
            hint="Lower train.warmup_epochs.",
        )


def create_scheduler(config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Scheduler:
    """The configured schedule over train.epochs * steps_per_epoch optimizer steps."""
    cfg = config.train
    check_schedule(cfg)
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":
        cycles_momentum = "momentum" in optimizer.defaults or "betas" in optimizer.defaults
        # torch divides by the length of the rise and of the fall: in a run of a few steps, keep both non-empty
        pct_start = min(max(cfg.pct_start, 1.5 / total), 1 - 0.5 / total)
        return OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=pct_start,
            cycle_momentum=cycles_momentum,
        )
    if cfg.scheduler == "cosine":
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        if not warmup:
            return CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg.min_lr)
        rise = LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup)
        decay = CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=cfg.min_lr)
        return SequentialLR(optimizer, [rise, decay], milestones=[warmup])
    if cfg.scheduler == "plateau":
        return ReduceLROnPlateau(
            optimizer, mode=monitor_mode(cfg.monitor), factor=cfg.lr_factor, patience=cfg.lr_patience
        )
    if cfg.scheduler == "step":
        return StepLR(optimizer, step_size=cfg.step_epochs * steps_per_epoch, gamma=cfg.lr_factor)
    return LambdaLR(optimizer, lambda _: 1.0)  # none


def per_step(scheduler: Scheduler) -> bool:
    """Whether the schedule moves after every optimizer step (all but plateau, which moves per epoch)."""
    return not isinstance(scheduler, ReduceLROnPlateau)


def fast_forward(scheduler: Scheduler, steps: int) -> None:
    """Move a fresh schedule to `steps` optimizer steps: how a run continues under changed values."""
    if not per_step(scheduler):
        return
    steps = min(steps, getattr(scheduler, "total_steps", steps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": intended here
        for _ in range(steps):
            scheduler.step()
