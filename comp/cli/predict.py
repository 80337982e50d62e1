"""Predict commands: predict, evaluate, ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.common import DEFAULT_CONFIG, ConfigOpt, SetOpt, command, examples, read_competition, read_config
from comp.console import console


@command(
    help="Predict each trained fold's out-of-fold rows and the test set, write cv.json; or a folder (--images).",
    rich_help_panel="Predict",
    epilog=examples(
        "comp predict", "comp predict --tta --set predict.tta=auto", "comp predict --images data/extra_images"
    ),
)
def predict(
    run: Annotated[
        str | None, typer.Argument(help="With --test-only: the run, trained or blended (default: name).")
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average the views of predict.tta (auto: chosen on OOF).")] = False,
    test_only: Annotated[
        bool,
        typer.Option("--test-only", help="Only the sample submission's test set, with the views cv.json recorded."),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="With --test-only: the submission file (default: submissions/).")
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Predict this folder of images instead: runs/<name>/predictions/<folder>.csv."),
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.predict import run_predict

    console.print(run_predict(read_config(config, set_), tta=tta, images=images, test_only=test_only, run=run, out=out))


@command(
    help="Score a run's OOF predictions every way, update its cv.json, draw its reports (report/*.png).",
    rich_help_panel="Predict",
    epilog=examples("comp evaluate", "comp evaluate blend1", "comp evaluate -c my-comp --set predict.metric=macro_f1"),
)
def evaluate(
    run: Annotated[str | None, typer.Argument(help="Run name or folder (default: the configured one).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.evaluate import evaluate_run

    cfg = read_config(config, set_)
    console.print(evaluate_run(cfg, read_competition(cfg), run))


@command(
    help="Write a submission from one run, or blend several runs into a new run and submit that.",
    rich_help_panel="Predict",
    epilog=examples(
        "comp ensemble exp1",
        "comp ensemble exp1 exp2 --name blend1 --weights auto",
        "comp ensemble exp1 exp2 exp3 --method rank --name blend_rank",
    ),
)
def ensemble(
    runs: Annotated[list[str] | None, typer.Argument(help="Run names or run folders.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the blended run.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing blended run.")] = False,
    method: Annotated[str, typer.Option("--method", help="mean | weighted | geometric | rank | hill.")] = "mean",
    weights: Annotated[
        str | None, typer.Option("--weights", help="auto (fitted on the OOF log loss) or w1,w2,... (one per run).")
    ] = None,
    negative_weights: Annotated[
        bool,
        typer.Option(
            "--negative-weights", help="With --method hill: a run may also be mixed in with a negative share."
        ),
    ] = False,
    holdout_folds: Annotated[
        str | None,
        typer.Option(
            "--holdout-folds", help="With --method hill: climb on the other folds, score on these (e.g. 0,1)."
        ),
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.ensemble import ensemble as blend_or_submit
    from comp.hill import parse_hill_options

    cfg = read_config(config, set_)
    hill = parse_hill_options(negative_weights, holdout_folds)
    console.print(
        blend_or_submit(
            cfg, read_competition(cfg), runs, name=name, force=force, method=method, weights=weights, hill=hill
        )
    )
