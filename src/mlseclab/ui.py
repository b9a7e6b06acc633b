"""Terminal output: progress and messages on stderr, data on stdout.

Nothing a user or a tool wrote is ever interpreted by rich: the consoles do not
turn ``:name:`` into emoji, :func:`warn`, :func:`error`, :func:`plain` and
:func:`step` print their text literally, and the markup strings given to
:func:`info` (and to table cells) pass every interpolated value through
:func:`esc`. A path with ``[/]`` in it or a line ``FILE:100:`` prints as written.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.text import Text

err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out = Console(highlight=False, soft_wrap=True, emoji=False)


def esc(value: object) -> str:
    """``value`` as markup that prints literally: wrap every user or external value in it."""
    return escape(str(value))


def info(message: str) -> None:
    """Print ``message``, rich markup: values interpolated into it must go through :func:`esc`."""
    err.print(message)


def plain(message: str) -> None:
    """Print ``message`` on stderr exactly as it is (no markup)."""
    err.print(message, markup=False)


def warn(message: str) -> None:
    """Print ``message`` (plain text, never markup) as a warning."""
    err.print(Text.assemble(("warning:", "yellow"), " ", message))


def error(line: str) -> None:
    """Print ``line`` (plain text, never markup) as an error."""
    err.print(Text.assemble(("error:", "bold red"), " ", line))


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Show ``title`` (plain text) with a spinner while the block runs, then its duration."""
    start = time.monotonic()
    shown = esc(title)
    if err.is_terminal and not os.environ.get("CI"):
        with err.status(f"{shown} ..."):
            yield
    else:
        err.print(f"{shown} ...")
        yield
    err.print(f"[green]✓[/] {shown} [dim]({time.monotonic() - start:.1f}s)[/]")


def confirm(question: str) -> bool:
    """Ask ``question`` (plain text); anything but y or yes, or no terminal, is no."""
    if not sys.stdin.isatty():
        return False
    err.print(f"{question} [y/N] ", end="", markup=False)
    return sys.stdin.readline().strip().lower() in ("y", "yes")
