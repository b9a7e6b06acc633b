"""Jinja2 templates shared by the orchestrator (:func:`mlseclab.checkout.templates`)."""

from __future__ import annotations

from typing import Any

import jinja2

from mlseclab import checkout
from mlseclab.alphabets import NFT_COMMENT

MANAGED = "Managed by mlseclab: generated from the lab spec; local changes are drift."


def nft_token(value: object) -> str:
    """A word for an nftables comment, refused unless it is in the comment alphabet.

    The schema keeps spec strings to that alphabet; this is the renderer's own wall, so
    that no value can close the comment's quotes and add a statement to a ruleset.
    """
    text = str(value)
    if not NFT_COMMENT.fullmatch(text):
        raise ValueError(f"{text!r} cannot go into an nftables comment")
    return text


def _environment(*, html: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(checkout.templates()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=html,  # noqa: S701 - config files are not HTML; report pages escape everything
    )
    env.filters["nft_token"] = nft_token
    return env


def render(name: str, **values: Any) -> str:
    """A config file (the router's ruleset, an inventory): printed as is."""
    return _environment(html=False).get_template(name).render(managed=MANAGED, **values)


def render_html(name: str, **values: Any) -> str:
    """A report page: everything the template prints is HTML-escaped unless marked safe."""
    return _environment(html=True).get_template(name).render(**values)
