"""What training shows, behind one small interface: the fold driver and the loop tell a Reporter what happens.

A reporter hears, in order: start_fold, then per epoch start_epoch, end_batch (each batch), end_epoch;
note (a one-off message) at any time; end_fold; and close once training ends, finished or not. The
methods of `Reporter` do nothing: a reporter overrides those it shows. ConsoleReporter prints the
epoch table and progress bars; the others are train.loggers: TensorBoardReporter writes event files,
TrackerReporter logs to W&B or MLflow (comp.trackers). A new logger is one more subclass, added in
`create_reporters` and checked in `check_loggers`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from comp.config import Config
from comp.console import console
from comp.errors import CompError
from comp.models.factory import count_parameters
from comp.trackers import TRACKERS, TrackerRun, check_trackers, open_tracker_run
from comp.training.checkpoint import record_tracker_run, tracker_run_id
from comp.training.distributed import is_main_process, world_size
from comp.training.state import Position

if TYPE_CHECKING:
    from comp.training.fold import FoldResult
    from comp.training.loop import Trainer


@dataclass
class FoldStart:
    """A fold about to train: where it starts, and what trains it."""

    fold: int
    folder: Path
    position: Position  # where training starts: nothing done yet, or where last.pt left off
    changes: list[str] | None  # None: a fresh fold; else resumed, under these changed config values (--force)
    trainer: Trainer  # its config, model, device and precision
    images: tuple[int, int]  # training, validation

    @property
    def config(self) -> Config:
        return self.trainer.config


class Reporter:
    """The events of training; each does nothing here."""

    def start_fold(self, start: FoldStart) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def start_epoch(self, epoch: int, phase: int, frozen: bool, batches: int, done: int) -> None:
        pass

    def end_batch(self) -> None:
        pass

    def end_epoch(self, row: dict, improved: bool) -> None:
        pass

    def end_fold(self, result: FoldResult) -> None:
        pass

    def close(self) -> None:
        pass


class Reporters(Reporter):
    """Several reporters heard as one, in order."""

    def __init__(self, reporters: list[Reporter]):
        self.reporters = reporters

    def start_fold(self, start: FoldStart) -> None:
        for reporter in self.reporters:
            reporter.start_fold(start)

    def note(self, text: str) -> None:
        for reporter in self.reporters:
            reporter.note(text)

    def start_epoch(self, epoch: int, phase: int, frozen: bool, batches: int, done: int) -> None:
        for reporter in self.reporters:
            reporter.start_epoch(epoch, phase, frozen, batches, done)

    def end_batch(self) -> None:
        for reporter in self.reporters:
            reporter.end_batch()

    def end_epoch(self, row: dict, improved: bool) -> None:
        for reporter in self.reporters:
            reporter.end_epoch(row, improved)

    def end_fold(self, result: FoldResult) -> None:
        for reporter in self.reporters:
            reporter.end_fold(result)

    def close(self) -> None:
        for reporter in self.reporters:
            reporter.close()


def create_reporters(config: Config) -> list[Reporter]:
    """The console, and the loggers of train.loggers (under DDP, rank 0's alone; csv: metrics.csv, always written)."""
    loggers = config.train.loggers if is_main_process() else []
    tensorboard = [TensorBoardReporter()] if "tensorboard" in loggers else []
    return [ConsoleReporter(), *tensorboard, *(TrackerReporter(name) for name in loggers if name in TRACKERS)]


def check_loggers(config: Config) -> None:
    """Every logger of train.loggers installed (and usable), checked before training starts."""
    if "tensorboard" in config.train.loggers:
        summary_writer_class()
    check_trackers(config)


# ----------------------------------------------------------------------------- the console

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


class ConsoleReporter(Reporter):
    """A line per epoch under a header, a progress bar over the epoch's batches, and what happened when."""

    def __init__(self):
        self.start: FoldStart | None = None
        self.started = 0.0  # time.perf_counter() at the fold's start
        self.best: float | None = None  # the best train.monitor so far
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def start_fold(self, start: FoldStart) -> None:
        self.start, self.started, self.best = start, time.perf_counter(), start.position.best_score
        if start.changes is not None:
            position = start.position
            self.note(
                f"fold {start.fold}: resuming after epoch {position.epoch}"
                f"{f', batch {position.batch}' if position.batch else ''}"
                f"{' with changed values: ' + '; '.join(start.changes) if start.changes else ''}"
            )
        trainer = start.trainer
        total, trainable = count_parameters(trainer.model)
        numerics = trainer.format.record()
        precision = f", {numerics['precision']}, {numerics['memory_format'].replace('_', '-')}"
        console.print(
            f"[bold]fold {start.fold}[/]: {start.config.model.name}, {total:,} parameters ({trainable:,} trainable), "
            f"{start.images[0]} train / {start.images[1]} val images, {trainer.device}{precision}"
            f"{f', DDP over {world_size()} processes' if world_size() > 1 else ''}"
            f"{', EMA' if trainer.ema else ''}",
            highlight=False,
        )
        columns = display_columns(start.config.train.monitor)
        console.print("  ".join(f"{title:>{width}}" for _, title, width, _ in columns), style="bold", highlight=False)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        self.progress = Progress(*columns, console=console, transient=True)
        self.progress.start()

    def note(self, text: str) -> None:
        console.print(text, highlight=False)

    def start_epoch(self, epoch: int, phase: int, frozen: bool, batches: int, done: int) -> None:
        frozen_text = " (backbone frozen)" if frozen else ""
        self.task = self.progress.add_task(
            f"fold {self.start.fold} epoch {epoch}/{self.start.config.train.epochs} phase {phase}{frozen_text}",
            total=batches,
            completed=done,
        )

    def end_batch(self) -> None:
        self.progress.advance(self.task)

    def end_epoch(self, row: dict, improved: bool) -> None:
        self.progress.remove_task(self.task)
        monitor = self.start.config.train.monitor
        if improved:
            self.best = row[monitor]
        line = "  ".join(f"{row[key]:>{width}{spec}}" for key, _, width, spec in display_columns(monitor))
        console.print(line + ("  * best" if improved else ""), highlight=False)

    def end_fold(self, result: FoldResult) -> None:
        self.close()
        console.print(
            f"fold {result.fold} done in {time.perf_counter() - self.started:.1f}s: best epoch {result.best_epoch}, "
            f"{self.start.config.train.monitor} {self.best:.4f} -> {self.start.folder}",
            highlight=False,
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


# ----------------------------------------------------------------------------- TensorBoard


def summary_writer_class() -> type:
    """TensorBoard's SummaryWriter; tensorboard is an optional extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CompError(
            "train.loggers names tensorboard, but the tensorboard package is not installed.",
            hint="pip install 'comp[tensorboard]', or take tensorboard out of train.loggers.",
        ) from None
    return SummaryWriter


class TensorBoardReporter(Reporter):
    """Each epoch's losses, accuracy, learning rate and monitored metric in <fold folder>/tb."""

    def __init__(self):
        self.writer = None

    def start_fold(self, start: FoldStart) -> None:
        # purge_step: events from the part of training being redone after a resume are dropped
        self.writer = summary_writer_class()(log_dir=str(start.folder / "tb"), purge_step=start.position.epoch + 1)
        self.monitor = start.config.train.monitor

    def end_epoch(self, row: dict, improved: bool) -> None:
        for key in ("train_loss", "val_loss", "val_accuracy", "lr", self.monitor):
            self.writer.add_scalar(key, row[key], row["epoch"])
        self.writer.flush()

    def end_fold(self, result: FoldResult) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ----------------------------------------------------------------------------- W&B and MLflow


class TrackerReporter(Reporter):
    """A tracker run per fold (comp.trackers): the config, each epoch's metrics and the fold's best score.

    The run's id goes into the fold's run.json, so that a resumed fold continues its run."""

    def __init__(self, tracker: str):
        self.tracker = tracker
        self.run: TrackerRun | None = None

    def start_fold(self, start: FoldStart) -> None:
        config = start.config
        run_id = tracker_run_id(start.folder, self.tracker) if start.changes is not None else None
        tags = {"job": "train", "fold": str(start.fold)}
        name = f"{config.name}-fold{start.fold}"
        self.run = open_tracker_run(self.tracker, config, config.name, name, tags, run_id)
        record_tracker_run(start.folder, self.tracker, self.run.id)
        self.monitor, self.best = config.train.monitor, start.position.best_score

    def end_epoch(self, row: dict, improved: bool) -> None:
        if improved:
            self.best = row[self.monitor]
        self.run.log_metrics({key: value for key, value in row.items() if key != "epoch"}, step=row["epoch"])

    def end_fold(self, result: FoldResult) -> None:
        self.run.log_summary({f"best_{self.monitor}": self.best, "best_epoch": result.best_epoch})
        self.run.finish()
        self.run = None

    def close(self) -> None:
        if self.run is not None:  # training stopped inside the fold
            self.run.finish(ok=False)
            self.run = None
