"""How `comp train` runs: folds side by side, one fold over several devices, or in this process.

--parallel N / --gpus    the folds of --fold all, N at a time, one process each (comp.training.parallel)
--devices N              each fold data-parallel over N processes, relaunched through torchrun
otherwise                in this process: alone, or as one of torchrun's processes (DDP)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from comp.config import Config
from comp.console import console
from comp.data.competition import Competition
from comp.errors import CompError
from comp.runs import run_dir
from comp.training.distributed import check_devices, is_main_process, launch, process_group, under_torchrun
from comp.training.fold import train
from comp.training.parallel import FoldOutcome, log_dir, parse_gpus, train_arguments, train_parallel
from comp.training.plan import plan_training


@dataclass
class TrainingResult:
    """What `comp train` did: each fold's outcome in fold order, and the run folder."""

    folder: Path
    outcomes: list[FoldOutcome]  # empty where other processes report (torchrun's; DDP ranks but 0)

    @property
    def failed(self) -> list[int]:
        return [o.fold for o in self.outcomes if o.status == "failed"]

    def __rich__(self) -> Group:
        if not self.outcomes:
            return Group()
        devices = any(o.device for o in self.outcomes)  # folds trained side by side, each on its device
        seeds = any(o.seed is not None for o in self.outcomes)  # comp train --seeds N
        columns = [
            "fold",
            *(["seed"] if seeds else []),
            "status",
            *(["device"] if devices else []),
            *["best epoch", "val loss", "val accuracy", "time"],
        ]
        table = Table(*columns, title="Folds")
        for o in self.outcomes:
            r = o.result
            scores = [str(r.best_epoch), f"{r.val_loss:.4f}", f"{r.val_accuracy:.4f}", f"{r.seconds:.0f}s"] if r else []
            status = "[red]failed[/]" if o.status == "failed" else o.status
            seed = [str(o.seed)] if seeds else []
            table.add_row(str(o.fold), *seed, status, *([o.device] if devices else []), *(scores or [""] * 4))
        return Group(table, *([] if self.failed else [Text(f"Results saved to {self.folder}")]))


def launch_training(
    config: Config,
    competition: Competition,
    config_path: Path,
    overrides: list[str],
    fold: int | str = "all",
    devices: int = 1,
    parallel: int | None = None,
    gpus: str | None = None,
    force: bool = False,
    resume: bool = False,
) -> TrainingResult:
    """`comp train`: `fold` (a number or "all") side by side (`parallel` at a time, on the `gpus` given as
    "0,1"), over `devices` processes each, or in this process. config_path and overrides (--set) are what the
    processes started are given."""
    if parallel or gpus:
        return train_side_by_side(config, competition, config_path, overrides, parallel, gpus, force, resume)
    if devices > 1 and not under_torchrun():
        arguments = train_arguments(fold, config_path, overrides, force, resume)
        train_on_devices(config, competition, devices, fold, arguments, force, resume)
        return TrainingResult(run_dir(config.name), [])  # the processes reported
    with process_group(config.train.device, devices):
        results = train(config, competition, fold, force=force, resume=resume)
        reports = is_main_process()
    outcomes = [FoldOutcome(r.fold, r.status, result=r) for r in results] if reports else []
    return TrainingResult(run_dir(config.name), outcomes)


def train_side_by_side(
    config: Config,
    competition: Competition,
    config_path: Path,
    overrides: list[str],
    parallel: int | None,
    gpus: str | None,
    force: bool,
    resume: bool,
) -> TrainingResult:
    """The folds of --fold all in processes of their own; a failed fold is an error once the others are done."""
    gpu_list = parse_gpus(gpus) if gpus else None
    outcomes = train_parallel(config, competition, config_path, overrides, parallel, gpu_list, force, resume)
    result = TrainingResult(run_dir(config.name), outcomes)
    if result.failed:
        console.print(result)  # every fold's outcome, then the error
        raise CompError(
            f"Fold(s) {', '.join(map(str, result.failed))} failed; the other folds are saved in {result.folder}.",
            hint=f"Fix the cause ({log_dir(config)} has each fold's output), then run the same "
            "command with --resume: finished folds are skipped, interrupted ones continue.",
        )
    return result


def train_on_devices(
    config: Config,
    competition: Competition,
    n_processes: int,
    fold: int | str,
    comp_arguments: list[str],
    force: bool = False,
    resume: bool = False,
) -> None:
    """`comp train --devices N`: refuse here, once, what every process would refuse; then run them under torchrun."""
    check_devices(config.train, n_processes)
    plan_training(config, competition, fold, force, resume)
    launch(n_processes, comp_arguments)
