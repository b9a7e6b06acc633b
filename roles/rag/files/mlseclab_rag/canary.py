"""The output filter: no response may carry a canary of a document the caller may not read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def forbidden(
    texts: Iterable[str], groups: Iterable[str], planted: Mapping[str, Iterable[str]]
) -> list[str]:
    """The canaries in ``texts`` whose documents share no group with ``groups``."""
    mine = set(groups)
    found: set[str] = set()
    for text in texts:
        for token, allowed in planted.items():
            if token in text and not mine & set(allowed):
                found.add(token)
    return sorted(found)
