"""Audit events as JSON lines on the journal, and Prometheus text for node_exporter."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


def event(kind: str, **fields: Any) -> None:
    """One JSON line on stdout (the journal, shipped to obs-01): ``{"audit": kind, ...}``."""
    record = {"audit": kind, "time": round(time.time(), 3), **fields}
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


def score_summary(scores: list[float]) -> dict[str, float]:
    if not scores:
        return {}
    ordered = sorted(scores)
    return {
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
        "mean": round(sum(ordered) / len(ordered), 4),
        "median": round(ordered[len(ordered) // 2], 4),
    }


class QueryMetrics:
    """The shape of retrieval, written to one file node_exporter's textfile collector reads."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.registry = CollectorRegistry()
        self.queries = Counter(
            "mlseclab_rag_queries", "RAG queries", ["client", "outcome"], registry=self.registry
        )
        self.collections = Counter(
            "mlseclab_rag_retrieved_chunks_by_collection",
            "Chunks retrieved, by collection",
            ["client", "collection"],
            registry=self.registry,
        )
        self.chunks = Histogram(
            "mlseclab_rag_chunks_per_query",
            "Chunks retrieved per query",
            buckets=(0, 1, 2, 4, 8, 16),
            registry=self.registry,
        )
        self.scores = Histogram(
            "mlseclab_rag_retrieval_score",
            "Similarity score of retrieved chunks",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=self.registry,
        )
        self.seconds = Histogram(
            "mlseclab_rag_stage_seconds",
            "Time per query stage",
            ["stage"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.canary_blocks = Counter(
            "mlseclab_rag_canary_blocks",
            "Answers blocked by the canary filter",
            ["client"],
            registry=self.registry,
        )

    def write(self) -> None:
        """Rewrite the file in place with one write (the role owns the file, not the
        directory, so there is no temporary file to rename)."""
        if self.path is None:
            return
        with self.path.open("wb") as f:
            f.write(generate_latest(self.registry))
