"""Tools commands: demo, info, env."""

from __future__ import annotations

from typing import Annotated

import typer

from comp.cli.common import DEFAULT_CONFIG, ConfigOpt, SetOpt, command, examples, read_competition, read_config
from comp.console import console


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

    cfg = read_config(config, set_)
    console.print(describe_run(cfg, read_competition(cfg)))


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
