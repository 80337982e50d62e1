"""Where a fold's training stands, and the files that keep it: writing them, and resuming from them.

A fold folder holds best.safetensors (the best weights by train.monitor; the EMA's when train.ema is
on), last.pt (everything needed to continue), metrics.csv (one row per epoch), run.json (config,
package versions, git commit, fold-file hash, resumes) and, once finished, summary.json. Under DDP,
rank 0 alone writes them.

Resuming is exact. The model side's random generators (torch, NumPy, Python: initialisation,
dropout, mixup) are saved in last.pt; the data side needs no saved state (comp.training.loaders).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from comp.config import Config, save_config
from comp.data.competition import Competition, check_same_classes, load_classes, save_classes
from comp.errors import CompError
from comp.io import BackgroundWrites, write_csv, write_json
from comp.runs import classes_file, config_file, fold_dir, run_dir
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
    snapshot,
    write_record,
)
from comp.training.distributed import is_main_process, rank_device
from comp.training.optim import fast_forward

if TYPE_CHECKING:
    from comp.training.loop import Trainer


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


# ----------------------------------------------------------------------------- the run's own files


def check_run_classes(config: Config, competition: Competition) -> None:
    classes_path = classes_file(run_dir(config.name))
    if classes_path.exists():
        check_same_classes(load_classes(classes_path), competition.classes, f"Run {run_dir(config.name)}")


def write_run_files(config: Config, competition: Competition) -> None:
    """Write (or check) the run's config.yaml and classes.json; config.yaml records data.task as it resolved (how
    prediction reads the model's outputs)."""
    if not is_main_process():
        return
    check_run_classes(config, competition)
    save_classes(competition.classes, classes_file(run_dir(config.name)))
    data = config.data.model_copy(update={"task": competition.task})
    save_config(config.model_copy(update={"data": data}), config_file(run_dir(config.name)))


# ----------------------------------------------------------------------------- a fold's files


def writes_in_background(device: torch.device) -> bool:
    """Checkpoints are written on a thread while a GPU trains: the CPU is free then. Training on the CPU, a writing
    thread competes with torch's threads for the cores and slowed a 3-epoch resnet18 run by 3-29 % (6 of 6 rounds,
    2-core CPU), more than the writes cost when training waits for them."""
    return device.type == "cuda"


@dataclass
class FoldFiles:
    """A fold's folder and what training writes there (rank 0 alone).

    A checkpoint is best.safetensors, when the best weights changed since the last one, then last.pt (the commit
    point): the two always belong together, so a resume (even with --force) never meets a best.safetensors from
    epochs that last.pt has not seen.

    In the background (writes_in_background), a checkpoint's state is copied at once and written while training goes
    on; the write is waited for before the next checkpoint and by close(). A process killed meanwhile keeps the
    previous checkpoint whole (every write is atomic)."""

    fold: int
    folder: Path
    classes: list
    writes: BackgroundWrites
    every_seconds: float  # train.checkpoint_seconds: an epoch's end writes a checkpoint once this long has passed
    written_at: float = 0.0  # monotonic(): the last checkpoint's time, or the fold's start (open)
    best: tuple[dict[str, torch.Tensor], int] | None = None  # best weights and their epoch, not written yet

    @classmethod
    def of(cls, config: Config, fold: int, classes: list) -> FoldFiles:
        background = writes_in_background(rank_device(config.train.device))
        folder = fold_dir(run_dir(config.name), fold)
        return cls(fold, folder, classes, BackgroundWrites(background), config.train.checkpoint_seconds)

    def open(self, config: Config, trainer: Trainer, state: dict | None) -> tuple[Position, list[str] | None]:
        """Continue from last.pt `state` (recorded in run.json), or start the folder afresh (state None).
        Returns where training stands and, when resumed, the config values changed since (--force)."""
        self.written_at = monotonic()
        if state is None:
            if is_main_process():
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder.mkdir(parents=True)
                write_record(self.folder, {**new_record(config, self.fold), "numerics": trainer.format.record()})
            return Position(), None
        changes = config_changes(state["config"], config.to_dict())
        position = restore(trainer, state, changes)
        if is_main_process():
            record_resume(self.folder, config, position.epoch, position.batch, changes)
            (self.folder / "summary.json").unlink(missing_ok=True)  # a finished fold continued (--resume --force)
        return position, changes

    def write_checkpoint(self, trainer: Trainer, position: Position) -> None:
        """Mid-epoch (train.checkpoint_every_steps): a checkpoint."""
        if is_main_process():
            self.writes.submit(self.checkpoint(trainer, position))

    def write_epoch(self, trainer: Trainer, position: Position, improved: bool, last: bool) -> None:
        """The epoch just ended: metrics.csv, then a checkpoint after the `last` epoch or once train.checkpoint_seconds
        have passed since the one before. Until then, improved weights wait as a copy."""
        if not is_main_process():
            return
        due = last or monotonic() - self.written_at >= self.every_seconds
        if improved:
            # Contiguous here, as safetensors needs, so the writing thread runs no tensor copy of its own beside
            # training; a copy unless written now, since training moves the weights on.
            weights, contiguous = trainer.evaluated_weights, torch.contiguous_format
            self.best = (self.taken(weights, contiguous) if due else snapshot(weights, contiguous), position.epoch)
        rows = pd.DataFrame(position.rows)
        checkpoint = self.checkpoint(trainer, position) if due else None

        def write() -> None:
            write_csv(self.folder / "metrics.csv", rows)
            if checkpoint is not None:
                checkpoint()

        self.writes.submit(write)

    def checkpoint(self, trainer: Trainer, position: Position) -> Callable[[], None]:
        """A checkpoint's write, its state taken now: best.safetensors when the best weights changed since the last
        checkpoint, then last.pt."""
        best, self.best = self.best, None
        state = self.taken(checkpoint_state(trainer, position, self.classes))
        self.written_at = monotonic()

        def write() -> None:
            if best is not None:
                weights, epoch = best
                save_weights(weights, self.folder / "best.safetensors", self.classes, epoch)
            save_state(self.folder / "last.pt", state)

        return write

    def taken(self, state: Any, memory_format: torch.memory_format = torch.preserve_format) -> Any:
        """The state as it is now: a snapshot when training goes on while it is written."""
        return snapshot(state, memory_format) if self.writes.background else state

    def close(self) -> None:
        """Wait until the last checkpoint is on disk (raising its error, if writing it failed)."""
        self.writes.close()

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Mark the fold finished in run.json, then write summary.json: the fold is finished once it exists."""
        if is_main_process():
            record = read_record(self.folder)
            record["finished"] = now()
            write_record(self.folder, record)
            write_json(self.folder / "summary.json", summary)


def read_summary(config: Config, fold: int) -> dict[str, Any] | None:
    path = fold_dir(run_dir(config.name), fold) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


# ----------------------------------------------------------------------------- last.pt: save and restore


def checkpoint_state(trainer: Trainer, position: Position, classes: list) -> dict[str, Any]:
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "ema": None if trainer.ema is None else trainer.ema.module.state_dict(),
        "position": asdict(position),
        "rng": rng_state(),
        "classes": classes,
        "config": trainer.config.to_dict(),
    }


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
            hint=f"Resume with the saved config ({path.parent / 'run.json'} holds it), or pass --force to continue "
            "from the saved weights and optimizer state with the new values (recorded in run.json).",
        )
    return state
