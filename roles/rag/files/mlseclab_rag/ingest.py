"""Ingest the corpus: manifest entry, checks, normalise, screen, chunk, embed, store.

Idempotent: a document whose sha256 the store already holds is left alone; a changed
one has its chunks replaced in one transaction; one gone from the manifest is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from mlseclab_rag import audit
from mlseclab_rag.chunk import chunk
from mlseclab_rag.inference import Inference
from mlseclab_rag.manifest import KINDS, Entry, parse_manifest
from mlseclab_rag.normalise import normalise
from mlseclab_rag.screen import screen
from mlseclab_rag.store import Store

MANIFEST = "manifest.yaml"
EMBED_BATCH = 16


class Refused(Exception):
    """A document that is not ingested, with the reason (oversize, unknown type, ...)."""


def load_entries(corpus: Path) -> tuple[Entry, ...]:
    with (corpus / MANIFEST).open(encoding="utf-8") as f:
        return parse_manifest(yaml.safe_load(f))


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


def run(settings: Any, store: Store, inference: Inference) -> dict[str, Any]:
    started = time.monotonic()
    corpus = Path(settings["corpus"]["dir"])
    max_bytes = int(settings["corpus"]["max_bytes"])
    size, overlap = int(settings["chunk"]["size"]), int(settings["chunk"]["overlap"])
    if not (corpus / MANIFEST).is_file():
        # nothing is indexed without a manifest; what is indexed stays until one arrives
        audit.event("rag.ingest.refused", reason=f"no {MANIFEST} in {corpus}")
        entries: tuple[Entry, ...] = ()
        known: dict[str, tuple[str, str]] = {}
    else:
        entries = load_entries(corpus)
        known = store.known()
    report: dict[str, Any] = {
        "documents": len(entries),
        "indexed": [],
        "unchanged": [],
        "quarantined": [],
        "refused": [],
        "removed": [],
        "chunks_written": 0,
    }
    for entry in entries:
        if known.get(entry.id, ("", ""))[0] == entry.sha256:
            report["unchanged"].append(entry.id)
            continue
        try:
            text, kind = read_document(corpus, entry, max_bytes)
        except Refused as exc:
            report["refused"].append({"id": entry.id, "reason": str(exc)})
            audit.event("rag.ingest.refused", document=entry.id, reason=str(exc))
            continue
        doc = normalise(text, kind)
        verdict = screen(doc.text, doc.invisible)
        if verdict.flagged:
            reason = "; ".join(verdict.reasons)
            store.replace(entry, "quarantined", reason, [], [])
            report["quarantined"].append({"id": entry.id, "reasons": list(verdict.reasons)})
            audit.event(
                "rag.ingest.quarantined",
                document=entry.id,
                collection=entry.collection,
                reasons=list(verdict.reasons),
            )
            continue
        pieces = chunk(doc.text, size, overlap)
        vectors: list[list[float]] = []
        for i in range(0, len(pieces), EMBED_BATCH):
            vectors += inference.embed(pieces[i : i + EMBED_BATCH])
        store.replace(entry, "indexed", "", pieces, vectors)
        report["indexed"].append(entry.id)
        report["chunks_written"] += len(pieces)
        audit.event(
            "rag.ingest.indexed",
            document=entry.id,
            collection=entry.collection,
            groups=list(entry.groups),
            chunks=len(pieces),
            sha256=entry.sha256,
        )
    gone = sorted(set(known) - {e.id for e in entries})
    if gone:
        store.remove(gone)
        report["removed"] = gone
        audit.event("rag.ingest.removed", documents=gone)
    listed = {str(Path(e.path)) for e in entries} | {MANIFEST}
    report["unlisted"] = sorted(
        str(p.relative_to(corpus))
        for p in corpus.rglob("*")
        if p.is_file() and str(p.relative_to(corpus)) not in listed
    )
    report["seconds"] = round(time.monotonic() - started, 3)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    state = Path(settings["state_dir"])
    (state / "ingest-report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
