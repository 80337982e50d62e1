"""Train commands: train, lr-find, probe, pseudo."""

from __future__ import annotations

from typing import Annotated

import typer

from comp.cli.common import DEFAULT_CONFIG, ConfigOpt, SetOpt, command, examples, read_competition, read_config
from comp.console import console


@command(
    help="Pseudo-labels from a run's test predictions (--threshold P or --top F): runs/<run>/pseudo_labels.csv; "
    "--soft keeps each class's probability instead of the predicted class.",
    rich_help_panel="Train",
    epilog=examples(
        "comp pseudo exp1 --threshold 0.95", "comp pseudo exp1 --top 0.2", "comp pseudo exp1 --threshold 0.9 --soft"
    ),
)
def pseudo(
    run: Annotated[str, typer.Argument(help="Run name or folder whose test predictions to label from.")],
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Keep test images whose top probability is at least this.")
    ] = None,
    top: Annotated[
        float | None, typer.Option("--top", help="Keep the most confident share of each predicted class, e.g. 0.2.")
    ] = None,
    soft: Annotated[
        bool,
        typer.Option(
            "--soft", help="Write the run's probability for each class (one column per class), not the class."
        ),
    ] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.pseudo import pseudo_label

    cfg = read_config(config, set_)
    console.print(pseudo_label(read_competition(cfg), run, threshold=threshold, top=top, soft=soft))


@command(
    help="Train one fold (--fold K) or every fold (--fold all) of the configured experiment.",
    rich_help_panel="Train",
    epilog=examples(
        "comp train --set train.epochs=3",
        "comp train --fold 0 --resume",
        "comp train --seeds 3",
        "comp train --parallel 4 --gpus 0,1,2,3 --set train.loggers=[csv,wandb]",
    ),
)
def train(
    fold: Annotated[str, typer.Option("--fold", "-f", help="Fold number, or 'all'.")] = "all",
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain from scratch; with --resume: continue under changed config values.")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue interrupted folds from last.pt.")] = False,
    devices: Annotated[
        int,
        typer.Option(
            "--devices",
            min=1,
            help="Train each fold data-parallel over N processes (a GPU each, or the CPU), through torchrun.",
        ),
    ] = 1,
    parallel: Annotated[
        int | None,
        typer.Option(
            "--parallel",
            min=1,
            help="With --fold all: train N folds at a time, each in its own process on its own device.",
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="With --parallel: the GPUs to spread the folds over, e.g. 0,1,2,3 (default: all visible).",
        ),
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            min=1,
            help="Train the same folds with N seeds (train.seed, +1, ...) as one run: runs/<name>/seed<s>/.",
        ),
    ] = 1,
) -> None:
    from comp.training.seeds import train_seeds

    if fold != "all" and not fold.isdigit():
        raise typer.BadParameter(f"--fold must be a fold number or 'all', not {fold!r}.")
    cfg = read_config(config, set_)
    if (parallel or gpus) and (fold != "all" or devices > 1):
        raise typer.BadParameter(
            "--parallel and --gpus spread the folds of --fold all, one process per fold; "
            "--devices alone trains one fold over several devices."
        )
    result = train_seeds(
        cfg,
        read_competition(cfg),
        config,
        set_ or [],
        seeds,
        fold if fold == "all" else int(fold),
        devices=devices,
        parallel=parallel,
        gpus=gpus,
        force=force,
        resume=resume,
    )
    console.print(result)


@command(
    "lr-find",
    help="Learning-rate range test on one fold's training rows: suggested lr and report/lr_find.png.",
    rich_help_panel="Train",
    epilog=examples("comp lr-find", "comp lr-find --fold 1 --steps 100 --end-lr 1"),
)
def lr_find(
    fold: Annotated[int, typer.Option("--fold", "-f", min=0, help="Whose training rows to sweep on.")] = 0,
    start_lr: Annotated[float, typer.Option("--start-lr", help="First learning rate of the sweep.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", help="Last learning rate of the sweep.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", help="Batches in the sweep (one learning rate each).")] = 200,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.training.lr_find import lr_find as range_test

    cfg = read_config(config, set_)
    console.print(range_test(cfg, read_competition(cfg), fold=fold, start_lr=start_lr, end_lr=end_lr, steps=steps))


@command(
    help="Backbone features + an SVM or logistic regression (grid-searched per fold), written as a run.",
    rich_help_panel="Train",
    epilog=examples(
        "comp probe", "comp probe --from-run exp1 --name exp1_svm", "comp probe --set probe.classifier=logistic"
    ),
)
def probe(
    from_run: Annotated[
        str | None, typer.Option("--from-run", help="Featurise each fold with this trained run's own fold weights.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The probe's run name (default: name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the probe run's earlier predictions.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.probe import probe as fit_probe

    cfg = read_config(config, set_)
    console.print(fit_probe(cfg, read_competition(cfg), from_run=from_run, name=name, force=force))
