"""Shared CLI helpers: one way to print errors and exit without a traceback."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
"""Messages are not wrapped at the console's width (80 columns when not a terminal), so a
log file keeps one message per line and its paths whole; tables still fit the width."""


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as an error and exit with ``code`` (no traceback)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def refuse_file_output(out: Path | None, option: str = "--out") -> None:
    """Refuse an output folder (``--out``, ``--cache``) that is an existing file, before
    any work that would be lost when writing into it fails."""
    if out is not None and out.exists() and not out.is_dir():
        fail(f"{option} {out} is a file; choose an output folder (it is created if missing)")
