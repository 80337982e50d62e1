"""Data commands: starter config, download, folds, duplicates."""

from __future__ import annotations

from typing import Annotated

import typer

from comp.cli.common import DEFAULT_CONFIG, ConfigOpt, SetOpt, command, examples, read_competition, read_config
from comp.console import console


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
    from comp.kaggle.download import download as fetch_competition

    cfg = read_config(config, set_)
    console.print(fetch_competition(slug or cfg.data.competition, force))


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

    cfg = read_config(config, set_)
    console.print(write_folds(cfg, read_competition(cfg), force=force))


@command(
    help="Exact and near-duplicate images within train, train-test and across folds: runs/<name>/duplicates.csv.",
    rich_help_panel="Data",
    epilog=examples("comp duplicates", "comp duplicates --set duplicates.max_distance=4"),
)
def duplicates(config: ConfigOpt = DEFAULT_CONFIG, set_: SetOpt = None) -> None:
    from comp.leaks import find_duplicates

    cfg = read_config(config, set_)
    console.print(find_duplicates(cfg, read_competition(cfg)))
