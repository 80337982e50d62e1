"""What every command shares: the Typer app, the `command` decorator, the config options and loaders."""

from __future__ import annotations

import functools
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
                # printed as written: messages hold brackets (comp[wandb], --set key=[a,b]), not rich markup
                err_console.print(f"[bold red]Error:[/] {escape(exc.message)}", highlight=False)
                if exc.hint:
                    err_console.print(exc.hint, highlight=False, markup=False)
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


def read_config(config: Path, overrides: list[str] | None):
    from comp.config import load_config

    return load_config(config, overrides or [])


def read_competition(cfg):
    from comp.data.competition import load_competition

    return load_competition(cfg.data)
