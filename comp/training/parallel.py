"""Folds side by side: `comp train --fold all --parallel N` runs N folds at a time, one process each.

Each fold is its own `comp train --fold K` process with the same --config and --set, so a crash or an
out-of-memory error stays in its fold and every fold resumes as usual. A process sees one GPU
(CUDA_VISIBLE_DEVICES) and its share of the CPU cores (affinity, OMP_NUM_THREADS); on a machine without
GPUs the N processes share the cores. Its output goes to runs/<name>/logs/fold<k>.log; one live view
shows every fold's epochs. A failed fold is reported and the others go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from comp.config import Config
from comp.console import console
from comp.data.competition import Competition
from comp.device import resolve_device
from comp.errors import CompError
from comp.runs import fold_dir, run_dir
from comp.training.checkpoint import now
from comp.training.fold import FoldResult, read_result
from comp.training.plan import Outcome, plan_training

POLL_SECONDS = 1.0


# ----------------------------------------------------------------------------- what to run


def log_dir(config: Config) -> Path:
    """Where each fold process's output goes: fold<k>.log."""
    return run_dir(config.name) / "logs"


def train_arguments(fold: int | str, config_path: Path, overrides: list[str], force: bool, resume: bool) -> list[str]:
    """`comp train` arguments that train `fold` under the same config, for a child process or torchrun."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    flags = [*(["--force"] if force else []), *(["--resume"] if resume else [])]
    return ["train", "--fold", str(fold), "--config", str(config_path), *sets, *flags]


# ----------------------------------------------------------------------------- where each process runs


@dataclass
class Slot:
    """A place for one fold process: its device's name, its environment and its CPU cores (None: all)."""

    device: str
    env: dict[str, str]
    cores: list[int] | None


def parse_gpus(text: str) -> list[int]:
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        gpus = []
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise CompError(f"--gpus {text!r} is not a list of distinct GPU numbers.", hint="Write it as --gpus 0,1,2,3.")
    return gpus


def choose_gpus(gpus: list[int] | None, device_name: str) -> list[int]:
    """The GPUs to spread folds over: those asked for, or every visible one when training on CUDA; [] for CPUs."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus is None:
        gpus = list(range(count)) if resolve_device(device_name).type == "cuda" else []
    if gpus and device_name not in ("auto", "cuda"):
        raise CompError(
            f"--parallel gives each fold process one GPU, which it sees as cuda: "
            f"train.device={device_name} would point elsewhere.",
            hint="Set train.device to auto or cuda.",
        )
    missing = [g for g in gpus if g >= count]
    if missing:
        raise CompError(
            f"--gpus asks for GPU {missing[0]}, but {count} GPU(s) are visible.",
            hint="Pick from the GPUs `comp env` lists, or leave --gpus out (all visible ones).",
        )
    return gpus


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def device_slots(parallel: int, gpus: list[int], cores: list[int], visible: str | None) -> list[Slot]:
    """One slot per concurrent process: GPUs taken in turn (by CUDA_VISIBLE_DEVICES, translated through the
    parent's own `visible` list), cores dealt out evenly (all shared, one thread each, if there are fewer)."""
    visible_ids = visible.split(",") if visible else None
    slots = []
    for i in range(parallel):
        own = cores[i::parallel] if parallel <= len(cores) else None
        env = {"OMP_NUM_THREADS": str(len(own) if own else 1)}
        device = "cpu"
        if gpus:
            gpu = gpus[i % len(gpus)]
            env["CUDA_VISIBLE_DEVICES"] = visible_ids[gpu] if visible_ids else str(gpu)
            device = f"cuda:{gpu}"
        slots.append(Slot(device, env, own))
    return slots


def pin(pid: int, cores: list[int] | None) -> None:
    """Keep a process (and the DataLoader workers it starts) on its cores. Set from here, right after the
    start, rather than in the child before exec, which is unsafe while this process runs threads."""
    if cores is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(pid, cores)
    except ProcessLookupError:  # it has already ended; its exit code tells the rest
        pass


# ----------------------------------------------------------------------------- running folds


@dataclass
class FoldOutcome:
    fold: int
    status: Outcome
    device: str = ""
    log: Path | None = None
    result: FoldResult | None = None
    error: str = ""  # a failed fold: the end of its output
    seed: int | None = None  # a run of several seeds: the seed this fold was trained with

    def for_seed(self, seed: int) -> FoldOutcome:
        return replace(self, seed=seed)


@dataclass
class Running:
    fold: int
    slot: Slot
    process: subprocess.Popen
    log: Path
    offset: int  # where this attempt's output starts in the log


def epochs_done(config: Config, fold: int) -> int:
    path = fold_dir(run_dir(config.name), fold) / "metrics.csv"  # replaced atomically: never read half-written
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def failure_message(log: Path, offset: int) -> str:
    """What a failed fold said last (from `offset` in its log): comp's error and hint, or the exception's line."""
    with open(log, errors="replace") as f:
        f.seek(offset)
        lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    return " ".join(lines[errors[-1] :] if errors else lines[-1:])


def start(config: Config, fold: int, slot: Slot, arguments: list[str]) -> Running:
    log = log_dir(config) / f"fold{fold}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        offset = out.tell()
        out.write(f"--- {now()} comp {' '.join(arguments)}  [{slot.device}]\n")
        out.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "comp", *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **slot.env},
        )
    pin(process.pid, slot.cores)
    return Running(fold, slot, process, log, offset)


def finish(config: Config, run: Running) -> FoldOutcome:
    code = run.process.returncode
    result = read_result(config, run.fold) if code == 0 else None
    if result is not None:
        return FoldOutcome(run.fold, result.status, run.slot.device, run.log, result)
    reason = f"exit code {code}" if code else "ended without summary.json"
    return FoldOutcome(
        run.fold, "failed", run.slot.device, run.log, error=f"{reason}: {failure_message(run.log, run.offset)}"
    )


def stop(running: dict[int, Running]) -> None:
    """End the fold processes this run started (an interrupted fold keeps its last.pt)."""
    for run in running.values():
        run.process.terminate()
    for run in running.values():
        try:
            run.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.process.kill()


def train_parallel(
    config: Config,
    competition: Competition,
    config_path: Path,
    overrides: list[str],
    parallel: int | None = None,
    gpus: list[int] | None = None,
    force: bool = False,
    resume: bool = False,
) -> list[FoldOutcome]:
    """Train every fold that `--fold all` would, `parallel` at a time (default: one per GPU), each in its own
    process on its own device. Returns each fold's outcome, in fold order; failed folds do not stop the others."""
    _, plan = plan_training(config, competition, "all", force, resume)
    gpus = choose_gpus(gpus, config.train.device)
    parallel = parallel or max(1, len(gpus))
    slots = device_slots(parallel, gpus, usable_cores(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    outcomes = {k: FoldOutcome(k, "skipped", result=read_result(config, k)) for k, a in plan.items() if a == "skip"}
    arguments = {
        k: train_arguments(k, config_path, overrides, force, resume) for k, action in plan.items() if action != "skip"
    }
    console.print(
        f"{len(arguments)} fold(s) to train, {parallel} at a time on "
        f"{', '.join(sorted({s.device for s in slots}))}; logs in {log_dir(config)}",
        highlight=False,
    )
    outcomes.update(run_folds(config, slots, arguments))
    return [outcomes[k] for k in sorted(outcomes)]


def run_folds(config: Config, slots: list[Slot], arguments: dict[int, list[str]]) -> dict[int, FoldOutcome]:
    """Each fold's process (its `comp` arguments by fold) in the next free slot, every fold's epochs in one live
    view; returns their outcomes. Interrupted, the processes still running are stopped."""
    waiting, running, outcomes = list(arguments), {}, {}  # running: by slot
    columns = [
        TextColumn("fold {task.fields[fold]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=console) as progress:
        tasks: dict[int, TaskID] = {
            k: progress.add_task(
                "", total=config.train.epochs, fold=k, status="waiting", completed=epochs_done(config, k), start=False
            )
            for k in waiting
        }
        try:
            while waiting or running:
                for i, slot in enumerate(slots):
                    if i not in running and waiting:
                        fold = waiting.pop(0)
                        running[i] = start(config, fold, slot, arguments[fold])
                        progress.start_task(tasks[fold])
                        progress.update(tasks[fold], status=f"running on {slot.device}")
                for i, run in list(running.items()):
                    progress.update(tasks[run.fold], completed=epochs_done(config, run.fold))
                    if run.process.poll() is None:
                        continue
                    del running[i]
                    outcome = outcomes[run.fold] = finish(config, run)
                    progress.stop_task(tasks[run.fold])
                    progress.update(tasks[run.fold], status=outcome.status)
                    if outcome.status == "failed":
                        progress.console.print(
                            f"[red]fold {run.fold} failed[/] on {run.slot.device}, {outcome.error} (log: {run.log})",
                            highlight=False,
                        )
                if running:
                    time.sleep(POLL_SECONDS)
        finally:
            stop(running)
    return outcomes
