"""Ingest the corpus: manifest entry, checks, normalise, screen, chunk, embed, store.

Idempotent: a document whose sha256 the store already holds is left alone; a changed
one has its chunks replaced in one transaction; one gone from the manifest is removed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from mlseclab_rag import audit
from mlseclab_rag.chunk import chunk
from mlseclab_rag.documents import Refused, read_document
from mlseclab_rag.inference import Inference
from mlseclab_rag.manifest import Entry, parse_manifest
from mlseclab_rag.normalise import normalise
from mlseclab_rag.screen import screen
from mlseclab_rag.store import Store

MANIFEST = "manifest.yaml"
EMBED_BATCH = 16


def load_entries(corpus: Path) -> tuple[Entry, ...]:
    with (corpus / MANIFEST).open(encoding="utf-8") as f:
        return parse_manifest(yaml.safe_load(f))


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
