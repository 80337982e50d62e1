"""The `comp` command line: each command parses its options, calls one library function, prints."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from comp import __version__
from comp.console import console, err_console
from comp.errors import CompError

app = typer.Typer(
    name="comp",
    help="A Kaggle image-classification competition harness: download, folds, train, predict, ensemble, submit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # comp --install-completion (bash, zsh, fish, PowerShell)
    epilog="Each command's --help ends with examples. Configs: -c NAME or a YAML file; any key: --set key=value.",
)
_state = {"debug": False}

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Experiment config: a YAML file, or a NAME: configs/NAME.yaml here if present, else comp's packaged "
        "NAME (default, fashion_mnist, resnet9_scratch, ...).",
        show_default=True,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key, e.g. --set train.epochs=3 (repeatable)."),
]
DEFAULT_CONFIG = Path("default")  # configs/default.yaml when the working folder has one, else the packaged one


def examples(*commands: str) -> str:
    """A command's help epilog: a few real command lines."""
    return "Examples:\n" + "\n".join(f"  [bold]{escape(line)}[/]" for line in commands)


def command(*args, **kwargs) -> Callable:
    """`app.command`, plus the one place a CompError becomes a short message and exit code 1."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except CompError as exc:
                if _state["debug"]:
                    raise
                err_console.print(f"[bold red]Error:[/] {exc.message}", highlight=False)
                if exc.hint:
                    err_console.print(exc.hint, highlight=False)
                raise typer.Exit(1) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def _version(value: bool) -> None:
    if value:
        console.print(f"comp {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    _state["debug"] = debug


def _config(config: Path, overrides: list[str] | None):
    from comp.config import load_config

    return load_config(config, overrides or [])


def _competition(cfg):
    from comp.data.competition import load_competition

    return load_competition(cfg.data)


@command(
    help="Write a starter config, configs/SLUG.yaml (default: configs/default.yaml): every key, commented.",
    rich_help_panel="Data",
    epilog=examples(
        "comp init",
        "comp init dogs-vs-cats-redux-kernels-edition",
        "comp init dogs-vs-cats-redux-kernels-edition --force",
    ),
)
def init(
    slug: Annotated[
        str | None, typer.Argument(help="Kaggle competition slug: names the file and sets data.competition, data.root.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
) -> None:
    from comp.config import write_starter_config

    console.print(write_starter_config(slug, force=force))


@command(
    help="Fetch a competition into data/<slug>/ and survey it; `download demo` builds the offline demo.",
    rich_help_panel="Data",
    epilog=examples(
        "comp download demo",
        "comp download dogs-vs-cats-redux-kernels-edition",
        "comp download -c dogs-vs-cats-redux-kernels-edition --force",
    ),
)
def download(
    slug: Annotated[str | None, typer.Argument(help="Kaggle slug (default: data.competition).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download (or rebuild) even if present.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    cfg = _config(config, set_)
    slug = slug or cfg.data.competition
    if slug == "demo":
        from comp.data.demo import write_demo

        console.print(write_demo(Path("data/demo"), force))
        return
    from comp.kaggle.download import download_competition

    console.print(download_competition(slug, force=force))


@command(
    help="Stratified k-fold assignment of the training set, written to folds/.",
    rich_help_panel="Data",
    epilog=examples(
        "comp folds", "comp folds --set folds.k=10", "comp folds -c my-comp --set folds.group_column=patient_id --force"
    ),
)
def folds(
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a fold file that differs.")] = False,
) -> None:
    from comp.data.folds import write_folds

    cfg = _config(config, set_)
    console.print(write_folds(cfg, _competition(cfg), force=force))


@command(
    help="Train one fold (--fold K) or every fold (--fold all) of the configured experiment.",
    rich_help_panel="Train",
    epilog=examples(
        "comp train --set train.epochs=3",
        "comp train --fold 0 --resume",
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
) -> None:
    from comp.training.launch import launch_training

    if fold != "all" and not fold.isdigit():
        raise typer.BadParameter(f"--fold must be a fold number or 'all', not {fold!r}.")
    cfg = _config(config, set_)
    if (parallel or gpus) and (fold != "all" or devices > 1):
        raise typer.BadParameter(
            "--parallel and --gpus spread the folds of --fold all, one process per fold; "
            "--devices alone trains one fold over several devices."
        )
    result = launch_training(
        cfg,
        _competition(cfg),
        config,
        set_ or [],
        fold if fold == "all" else int(fold),
        devices=devices,
        parallel=parallel,
        gpus=gpus,
        force=force,
        resume=resume,
    )
    console.print(result)


@command(
    help="Predict each trained fold's out-of-fold rows and the test set, write cv.json; or a folder (--images).",
    rich_help_panel="Predict",
    epilog=examples(
        "comp predict", "comp predict --tta --set predict.tta=auto", "comp predict --images data/extra_images"
    ),
)
def predict(
    tta: Annotated[bool, typer.Option("--tta", help="Average the views of predict.tta (auto: chosen on OOF).")] = False,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Predict this folder of images instead: runs/<name>/predictions/<folder>.csv."),
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.predict import run_predict

    console.print(run_predict(_config(config, set_), tta=tta, images=images))


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

    cfg = _config(config, set_)
    console.print(evaluate_run(cfg, _competition(cfg), run))


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
    method: Annotated[str, typer.Option("--method", help="mean | weighted | geometric | rank.")] = "mean",
    weights: Annotated[
        str | None, typer.Option("--weights", help="auto (fitted on the OOF log loss) or w1,w2,... (one per run).")
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.ensemble import ensemble as blend_or_submit

    cfg = _config(config, set_)
    console.print(blend_or_submit(cfg, _competition(cfg), runs, name=name, force=force, method=method, weights=weights))


@command(
    help="Check a submission CSV against the sample submission; exit 1 when anything is wrong.",
    rich_help_panel="Submit",
    epilog=examples("comp validate submissions/exp1.csv", "comp validate submissions/blend1.csv -c my-comp"),
)
def validate(
    file: Annotated[Path, typer.Argument(help="The submission CSV to check.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.submission.validate import validate_with_config

    result = validate_with_config(file, _config(config, set_))
    console.print(result)
    if not result.is_valid:
        raise typer.Exit(1)


@command(
    help="Validate FILE, submit it to Kaggle, record it in submissions/ledger.csv; --wait: the score.",
    rich_help_panel="Submit",
    epilog=examples(
        'comp submit submissions/exp1.csv -m "resnet18, 5 folds, tta"',
        'comp submit submissions/blend1.csv -m "blend of exp1 and exp2" --wait',
    ),
)
def submit(
    file: Annotated[Path, typer.Argument(help="The submission CSV.")],
    message: Annotated[str, typer.Option("--message", "-m", help="Description (Kaggle and ledger).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the public score and record it.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Submit even if already submitted.")] = False,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="With --wait: seconds before the first check.")
    ] = 10.0,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.kaggle.submit import submit as submit_to_kaggle

    cfg = _config(config, set_)
    console.print(submit_to_kaggle(cfg, file, message, force=force, wait=wait, poll_interval=poll_interval))


@command(
    help="The competition's recent Kaggle submissions and scores, beside the ledger's OOF scores.",
    rich_help_panel="Submit",
    epilog=examples("comp submissions", "comp submissions --limit 5 -c my-comp"),
)
def submissions(
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="How many, newest first.")] = 20,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    from comp.kaggle.submissions import refresh_scores

    console.print(refresh_scores(_config(config, set_).data.competition, limit=limit))


@command(
    help="The whole pipeline on the offline demo competition, scored on its held-back test labels.",
    rich_help_panel="Tools",
    epilog=examples("comp demo", "comp demo --set train.epochs=1 --set folds.k=2"),
)
def demo(config: ConfigOpt = DEFAULT_CONFIG, set_: SetOpt = None) -> None:
    from comp.pipeline import run_demo

    console.print(run_demo(config, set_))


@command(
    help="What a config amounts to: parameters, input size, mean/std, classes, fold file, finished folds.",
    rich_help_panel="Tools",
    epilog=examples("comp info", "comp info -c my-comp --set model.name=convnext_tiny"),
)
def info(config: ConfigOpt = DEFAULT_CONFIG, set_: SetOpt = None) -> None:
    from comp.info import describe_run

    cfg = _config(config, set_)
    console.print(describe_run(cfg, _competition(cfg)))


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

    cfg = _config(config, set_)
    console.print(range_test(cfg, _competition(cfg), fold=fold, start_lr=start_lr, end_lr=end_lr, steps=steps))


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

    cfg = _config(config, set_)
    console.print(fit_probe(cfg, _competition(cfg), from_run=from_run, name=name, force=force))


@command(
    "env",
    help="Versions, GPUs, bf16 and channels_last support: what to paste into a bug report.",
    rich_help_panel="Tools",
    epilog=examples("comp env", "comp env --json > env.json"),
)
def env_(json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False) -> None:
    from comp.env import collect_env

    env = collect_env()
    if json_output:
        typer.echo(env.to_json())
    else:
        console.print(env)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
