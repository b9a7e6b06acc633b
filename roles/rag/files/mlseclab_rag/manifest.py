"""The corpus manifest: one entry per document, with its provenance and who may read it.

``manifest.yaml`` at the corpus root (OWASP LLM04: nothing is indexed without an
entry that pins its sha256)::

    documents:
      - id: model-cards          # [a-z0-9][a-z0-9._-]*, unique
        path: public/model-cards.md
        collection: public
        source: mlseclab reference corpus
        sha256: <64 hex digits of the file>
        labels: [governance]
        groups: [everyone]       # who may read its chunks (row-level security)
        canary: null             # or a token planted in the document
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

IDENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
CANARY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{11,63}")
SHA256 = re.compile(r"[0-9a-f]{64}")
#: file suffix -> the kind normalise() reads it as; anything else is refused
KINDS = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
}
FIELDS = {"id", "path", "collection", "source", "sha256", "labels", "groups", "canary"}


class ManifestError(ValueError):
    """The manifest is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class Entry:
    id: str
    path: str
    collection: str
    source: str
    sha256: str
    labels: tuple[str, ...]
    groups: tuple[str, ...]
    canary: str | None

    @property
    def kind(self) -> str | None:
        return KINDS.get(PurePosixPath(self.path).suffix.lower())


def _idents(value: Any, where: str, *, empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not empty):
        raise ManifestError(f"{where}: must be a {'' if empty else 'non-empty '}list")
    for item in value:
        if not isinstance(item, str) or not IDENT.fullmatch(item):
            raise ManifestError(f"{where}: {item!r} is not a name ([a-z0-9._-], up to 63)")
    return tuple(sorted(set(value)))


def _entry(raw: Any, i: int) -> Entry:
    where = f"documents[{i}]"
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: must be a mapping")
    unknown = set(raw) - FIELDS
    if unknown:
        raise ManifestError(f"{where}: unknown fields {sorted(unknown)}")
    for field in ("id", "path", "collection", "source", "sha256", "groups"):
        if field not in raw:
            raise ManifestError(f"{where}: {field} is required")
    doc_id, collection = raw["id"], raw["collection"]
    for field, value in (("id", doc_id), ("collection", collection)):
        if not isinstance(value, str) or not IDENT.fullmatch(value):
            raise ManifestError(f"{where}.{field}: {value!r} is not a name ([a-z0-9._-])")
    path = raw["path"]
    parts = PurePosixPath(path).parts if isinstance(path, str) else ()
    if not parts or path.startswith("/") or any(p in ("..", ".") for p in parts):
        raise ManifestError(f"{where}.path: {path!r} must be relative, inside the corpus")
    sha = raw["sha256"]
    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
        raise ManifestError(f"{where}.sha256: 64 lowercase hex digits")
    source = raw["source"]
    if not isinstance(source, str) or not source.isprintable() or len(source) > 200:
        raise ManifestError(f"{where}.source: one printable line of at most 200 characters")
    canary = raw.get("canary")
    if canary is not None and (not isinstance(canary, str) or not CANARY.fullmatch(canary)):
        raise ManifestError(f"{where}.canary: 12-64 letters, digits, '_' and '-'")
    return Entry(
        id=doc_id,
        path=path,
        collection=collection,
        source=source,
        sha256=sha,
        labels=_idents(raw.get("labels", []), f"{where}.labels", empty=True),
        groups=_idents(raw["groups"], f"{where}.groups", empty=False),
        canary=canary,
    )


def parse_manifest(data: Any) -> tuple[Entry, ...]:
    """The entries of a loaded manifest (``yaml.safe_load`` of manifest.yaml)."""
    if not isinstance(data, dict) or not isinstance(data.get("documents"), list):
        raise ManifestError("manifest: must be a mapping with a documents list")
    entries = tuple(_entry(raw, i) for i, raw in enumerate(data["documents"]))
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            raise ManifestError(f"documents: id {e.id!r} appears twice")
        seen.add(e.id)
    return entries


def canaries(entries: tuple[Entry, ...]) -> dict[str, tuple[str, ...]]:
    """canary token -> the groups of the document it was planted in."""
    return {e.canary: e.groups for e in entries if e.canary}
