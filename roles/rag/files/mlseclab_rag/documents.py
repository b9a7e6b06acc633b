"""Reading one corpus document for ingest: type, size, place and pin checked first."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mlseclab_rag.manifest import KINDS, Entry


class Refused(Exception):
    """A document that is not ingested, with the reason (oversize, unknown type, ...)."""


def read_document(corpus: Path, entry: Entry, max_bytes: int) -> tuple[str, str]:
    """The document's text and kind, or :class:`Refused` saying why not."""
    kind = entry.kind
    if kind is None:
        raise Refused(
            f"unknown type {Path(entry.path).suffix or '(none)'!r}; accepted: "
            + ", ".join(sorted(KINDS))
        )
    path = corpus / entry.path
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(Path(os.path.realpath(corpus))) or not real.is_file():
        raise Refused(f"{entry.path}: not a regular file inside the corpus")
    size = real.stat().st_size
    if size > max_bytes:
        raise Refused(f"oversize: {size} bytes, the limit is {max_bytes}")
    raw = real.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != entry.sha256:
        raise Refused(f"sha256 {digest} does not match the manifest's {entry.sha256}")
    try:
        return raw.decode("utf-8"), kind
    except UnicodeDecodeError as exc:
        raise Refused(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
