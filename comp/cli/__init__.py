"""The `comp` command line: each command parses its options, calls one library function, prints.

The commands live one module per help panel; importing them registers them on `app`, in panel order.
"""

from __future__ import annotations

from comp.cli.common import app, command
from comp.console import console, err_console

# Registration order is the help's panel order: Data, Train, Predict, Submit, Tools.
from comp.cli import data, train, predict, submit, tools  # isort: skip

__all__ = ["app", "command", "console", "data", "err_console", "main", "predict", "submit", "tools", "train"]


def main() -> None:
    app()
