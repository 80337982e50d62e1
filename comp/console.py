"""The one console every command prints through (stdout), and the one for errors (stderr)."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
