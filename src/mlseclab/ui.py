"""Terminal output: progress and messages on stderr, data on stdout."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def info(message: str) -> None:
    err.print(message)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}")


def error(line: str) -> None:
    err.print(f"[bold red]error:[/] {line}", markup=True)


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Show ``title`` with a spinner while the block runs, then its duration."""
    start = time.monotonic()
    if err.is_terminal and not os.environ.get("CI"):
        with err.status(f"{title} ..."):
            yield
    else:
        err.print(f"{title} ...")
        yield
    err.print(f"[green]✓[/] {title} [dim]({time.monotonic() - start:.1f}s)[/]")


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    err.print(f"{question} [y/N] ", end="")
    return sys.stdin.readline().strip().lower() in ("y", "yes")
