"""Training: one model per fold, validated every epoch on the fold's held-out rows.

`train` plans the folds (comp.training.plan) and trains each with `train_fold`: the model, loaders
and trainer built, the fold folder started or resumed (comp.training.state), the epochs run
(comp.training.loop.fit), the result written. What training shows goes to the reporters
(comp.training.reporter).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import pandas as pd

from comp.config import Config
from comp.console import console
from comp.data.competition import Competition
from comp.models.factory import create_model
from comp.training.distributed import prepare_model, quiet_other_ranks, rank_device
from comp.training.loaders import create_loaders
from comp.training.loop import create_trainer, fit, seed_everything
from comp.training.plan import Outcome, plan_training
from comp.training.reporter import FoldStart, Reporter, Reporters, create_reporters
from comp.training.state import FoldFiles, read_summary, resumable_state, write_run_files


@dataclass
class FoldResult:
    """A trained fold (its summary.json): the best epoch's validation scores."""

    fold: int
    status: Outcome
    best_epoch: int
    val_loss: float
    val_accuracy: float
    seconds: float


def read_result(config: Config, fold: int) -> FoldResult | None:
    """A finished fold's result; None while it is not finished."""
    summary = read_summary(config, fold)
    return FoldResult(**summary) if summary is not None else None


def train(
    config: Config,
    competition: Competition,
    fold: int | str = "all",
    force: bool = False,
    resume: bool = False,
    reporters: list[Reporter] | None = None,
) -> list[FoldResult]:
    """Train one fold (`fold=K`) or every fold in order (`fold="all"`), protecting finished work.

    reporters: what shows the training (default: create_reporters, the console and the configured trackers)."""
    quiet_other_ranks(console)  # under DDP, rank 0 reports
    folds, plan = plan_training(config, competition, fold, force, resume)
    reporter = Reporters(create_reporters(config) if reporters is None else reporters)
    results = []
    try:
        for k, action in plan.items():
            if action == "skip":
                results.append(replace(read_result(config, k), status="skipped"))
            else:
                results.append(train_fold(config, competition, folds, k, reporter, action == "resume", force))
    finally:
        reporter.close()
    return results


def train_fold(
    config: Config,
    competition: Competition,
    folds: pd.DataFrame,
    fold: int,
    reporter: Reporter,
    resume: bool = False,
    force: bool = False,
) -> FoldResult:
    """Train one fold from scratch, or continue it from last.pt when `resume` (with changed values: `force`)."""
    cfg, classes = config.train, competition.classes
    state = resumable_state(config, competition, fold, force) if resume else None
    seed_everything(config.train_seed + fold)
    model = prepare_model(create_model(config.model, len(classes)).to(rank_device(cfg.device)), cfg.sync_bn)
    loaders = create_loaders(config, competition, folds, fold)
    steps_per_epoch = math.ceil(loaders[0].batch_sampler.batches_per_epoch / cfg.grad_accum_steps)
    trainer = create_trainer(
        config, model, steps_per_epoch, len(classes), competition.task, loaders[0].dataset.soft_targets
    )
    write_run_files(config, competition)
    files = FoldFiles.of(config, fold, classes)
    position, changes = files.open(config, trainer, state)
    images = (len(loaders[0].dataset), len(loaders[1].dataset))
    reporter.start_fold(FoldStart(fold, files.folder, position, changes, trainer, images))

    try:
        fit(trainer, loaders, position, files, reporter)
    finally:
        files.close()  # the last checkpoint is on disk before the summary, or before an error ends the process

    best = next(r for r in position.rows if r["epoch"] == position.best_epoch)
    status = "resumed" if state is not None else "trained"
    seconds = round(sum(r["seconds"] for r in position.rows), 2)
    result = FoldResult(fold, status, position.best_epoch, best["val_loss"], best["val_accuracy"], seconds)
    files.write_summary(asdict(result))
    reporter.end_fold(result)
    return result
