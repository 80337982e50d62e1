"""What `comp train` will do with each fold, decided and checked before any file is written.

A fold's plan is an Action: train it (new, or --force), resume it (interrupted, with --resume; or
finished, with --resume --force), or skip it (finished, under --fold all). Work that would be
lost is refused instead. A fold's Outcome is what became of it: trained, resumed, skipped, or
failed (a fold process of --parallel that stopped).
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from comp.augment import validate_aug
from comp.config import Config
from comp.console import console
from comp.data.competition import Competition
from comp.data.folds import fold_file_hash, load_folds
from comp.errors import CompError
from comp.models.factory import check_model_name
from comp.runs import fold_dir, fold_state, run_dir
from comp.training.checkpoint import read_record
from comp.training.distributed import check_batch_split, world_size
from comp.training.optim import check_monitor, check_optimizer, check_schedule
from comp.training.reporter import check_loggers
from comp.training.state import check_run_classes, resumable_state

Action = Literal["train", "resume", "skip"]
Outcome = Literal["trained", "resumed", "skipped", "failed"]


def plan_fold(config: Config, fold: int, one_fold: bool, force: bool, resume: bool) -> Action:
    """What to do with one fold, or a CompError when its work would be lost."""
    state = fold_state(run_dir(config.name), fold)
    folder = fold_dir(run_dir(config.name), fold)
    if state == "new" or (force and not resume):
        if state == "new" and resume:  # as Lightning's ckpt_path="last" does: say it, then train
            console.print(f"fold {fold}: nothing to resume in {folder} (no last.pt): training from scratch")
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
    config: Config, competition: Competition, folds: pd.DataFrame, plan: dict[int, Action], force: bool
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
    check_loggers(config)
    for k, action in plan.items():
        n_train = int((folds["fold"] != k).sum())
        if action != "skip" and cfg.batch_size > n_train:
            raise CompError(
                f"train.batch_size={cfg.batch_size} is larger than fold {k}'s {n_train} training rows.",
                hint="Lower train.batch_size.",
            )
        if action == "resume":
            resumable_state(config, competition, k, force, mmap=True)
    check_fold_file_unchanged(config, folds, plan)


def check_fold_file_unchanged(config: Config, folds: pd.DataFrame, plan: dict[int, Action]) -> None:
    """Every fold kept from earlier (not retrained now) was trained on the fold file as it is."""
    digest = fold_file_hash(config)
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
) -> tuple[pd.DataFrame, dict[int, Action]]:
    """The fold table and what to do with each wanted fold, after every check."""
    folds = load_folds(config, competition)
    n_folds = int(folds["fold"].max()) + 1
    wanted = list(range(n_folds)) if fold == "all" else [int(fold)]
    for k in wanted:
        if not 0 <= k < n_folds:
            raise CompError(f"--fold {k} is out of range: {config.fold_file} has folds 0..{n_folds - 1}.")
    plan = {k: plan_fold(config, k, fold != "all", force, resume) for k in wanted}
    check_before_training(config, competition, folds, plan, force)
    return folds, plan
