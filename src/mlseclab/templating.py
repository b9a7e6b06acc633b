"""Jinja2 templates shared by the orchestrator (``templates/`` at the top of the checkout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jinja2

MANAGED = "Managed by mlseclab: generated from the lab spec; local changes are drift."


def templates_dir() -> Path:
    env = os.environ.get("MLSECLAB_TEMPLATES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "templates"


def render(name: str, **values: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders config files, never HTML
    )
    return env.get_template(name).render(managed=MANAGED, **values)


def render_html(name: str, **values: Any) -> str:
    """A report page: everything the template prints is HTML-escaped unless marked safe."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=True,
    )
    return env.get_template(name).render(**values)
