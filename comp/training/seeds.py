"""`comp train --seeds N`: the same folds trained with N seeds (train.seed, train.seed + 1, ...) as one run.

Each seed is a trained run of its own, runs/<name>/seed<s>/ (config.name "<name>/seed<s>",
train.seed s, the same fold file), so training, resuming and protecting finished work go per fold
and seed exactly as for any run; `comp predict` then averages the seeds per fold (comp.predict_seeds).
A run is either one seed (runs/<name>/fold<k>/) or several (runs/<name>/seed<s>/): the two are
never mixed, and a run's set of seeds changes only with --force.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from comp.config import Config
from comp.console import console
from comp.data.competition import Competition
from comp.errors import CompError
from comp.runs import (
    finished_folds,
    fold_dirs,
    read_seeds,
    run_dir,
    seed_config,
    seed_dirs,
    seed_run_name,
    write_seeds,
)
from comp.training.launch import TrainingResult, launch_training
from comp.training.plan import plan_training


def seed_list(config: Config, n_seeds: int) -> list[int]:
    return [config.train_seed + i for i in range(n_seeds)]


def seed_overrides(config: Config, seed: int) -> list[str]:
    """The --set overrides that make a `comp train` process train one seed's sub-run."""
    return [f"name={seed_run_name(config.name, seed)}", f"train.seed={seed}"]


def stale_work(config: Config, seeds: list[int]) -> list[Path]:
    """Folders of the run that another seed count made: single-seed folds, or seed sub-runs not in `seeds`."""
    run = run_dir(config.name)
    if len(seeds) == 1:
        return list(seed_dirs(run).values())
    return list(fold_dirs(run).values()) + [d for s, d in seed_dirs(run).items() if s not in seeds]


def check_seed_count(config: Config, seeds: list[int], force: bool) -> None:
    """A run keeps the seeds it was started with (seeds.json; none: one seed), unless --force."""
    run = run_dir(config.name)
    recorded = read_seeds(run)
    clash = recorded != seeds if recorded else len(seeds) > 1 and bool(fold_dirs(run))
    if force or not clash:
        return
    if recorded:
        done = "; ".join(f"{d.name}: finished folds {finished_folds(d)}" for d in seed_dirs(run).values())
        had = f"{len(recorded)} seed(s) ({', '.join(map(str, recorded))}): {done}"
    else:
        had = f"one seed: {', '.join(str(d) for d in fold_dirs(run).values())}"
    raise CompError(
        f"Run '{config.name}' was trained with {had}; --seeds {len(seeds)} asks for {', '.join(map(str, seeds))}.",
        hint=f"Train it with --seeds {len(recorded) or 1} as before, start a new run (--set name=...), or pass "
        f"--force to retrain it with {len(seeds)} seed(s) (the other seeds' folders are removed).",
    )


def train_seeds(
    config: Config,
    competition: Competition,
    config_path: Path,
    overrides: list[str],
    n_seeds: int = 1,
    fold: int | str = "all",
    devices: int = 1,
    parallel: int | None = None,
    gpus: str | None = None,
    force: bool = False,
    resume: bool = False,
) -> TrainingResult:
    """`comp train --seeds N`: every seed's plan checked first, then each seed trained in turn."""
    seeds = seed_list(config, n_seeds)
    check_seed_count(config, seeds, force)
    stale = stale_work(config, seeds)
    options = {"fold": fold, "devices": devices, "parallel": parallel, "gpus": gpus, "force": force, "resume": resume}
    if n_seeds == 1:
        for folder in stale:
            shutil.rmtree(folder)
        write_seeds(run_dir(config.name), [])
        return launch_training(config, competition, config_path, overrides, **options)
    with console.capture():  # the plans' "skipped" notes are printed when each seed trains
        for seed in seeds:
            plan_training(seed_config(config, seed), competition, fold, force, resume)
    for folder in stale:
        shutil.rmtree(folder)
    write_seeds(run_dir(config.name), seeds)
    outcomes = []
    for seed in seeds:
        console.print(f"[bold]seed {seed}[/] -> {run_dir(seed_run_name(config.name, seed))}")
        sub = seed_config(config, seed)
        result = launch_training(sub, competition, config_path, overrides + seed_overrides(config, seed), **options)
        outcomes += [o.for_seed(seed) for o in result.outcomes]
    return TrainingResult(run_dir(config.name), outcomes)
