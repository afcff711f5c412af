"""Shared CLI helpers: one way to print errors and exit without a traceback."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as an error and exit with ``code`` (no traceback)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
