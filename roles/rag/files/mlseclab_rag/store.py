"""The vector store: rag.sources and rag.chunks in PostgreSQL + pgvector.

The query role reads under row-level security: every query runs in a transaction
that first sets ``mlseclab.principal`` to the gateway's signed assertion, and the
policy calls ``rag.principal_groups()``, which verifies it with the key only the
owner can read. Python never filters rows by group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from mlseclab_rag.prompt import Retrieved


def vector(values: Sequence[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


class Store:
    def __init__(self, settings: dict[str, Any], user: str, password: str) -> None:
        self.conninfo = psycopg.conninfo.make_conninfo(
            host=settings["host"],
            port=settings["port"],
            dbname=settings["dbname"],
            user=user,
            password=password,
            sslmode=settings.get("sslmode", "verify-full"),
            sslrootcert=settings["sslrootcert"],
            connect_timeout=10,
            application_name="mlseclab-rag",
        )

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.conninfo) as conn:
            yield conn

    # -- query role ---------------------------------------------------------
    def search(self, assertion: str, embedding: Sequence[float], k: int) -> list[Retrieved]:
        vec = vector(embedding)
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT set_config('mlseclab.principal', %s, true)", (assertion,))
            rows = conn.execute(
                "SELECT document, collection, seq, 1 - (embedding <=> %s::vector) AS score,"
                " content FROM rag.chunks ORDER BY embedding <=> %s::vector LIMIT %s",
                (vec, vec, k),
            ).fetchall()
        return [Retrieved(r[0], r[1], int(r[2]), float(r[3]), r[4]) for r in rows]

    # -- ingest role --------------------------------------------------------
    def known(self) -> dict[str, tuple[str, str]]:
        """document id -> (sha256, status) of everything indexed or quarantined."""
        with self.connect() as conn:
            rows = conn.execute("SELECT id, sha256, status FROM rag.sources").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def replace(
        self,
        entry: Any,
        status: str,
        reason: str,
        chunks: Sequence[str],
        embeddings: Sequence[Sequence[float]],
    ) -> None:
        """The document's row and exactly its new chunks, in one transaction."""
        groups, labels = list(entry.groups), list(entry.labels)
        with self.connect() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO rag.sources (id, collection, source, sha256, labels, groups,"
                " status, reason, chunks, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,now())"
                " ON CONFLICT (id) DO UPDATE SET collection = EXCLUDED.collection,"
                " source = EXCLUDED.source, sha256 = EXCLUDED.sha256, labels = EXCLUDED.labels,"
                " groups = EXCLUDED.groups, status = EXCLUDED.status, reason = EXCLUDED.reason,"
                " chunks = EXCLUDED.chunks, updated_at = now()",
                (
                    entry.id,
                    entry.collection,
                    entry.source,
                    entry.sha256,
                    labels,
                    groups,
                    status,
                    reason,
                    len(chunks),
                ),
            )
            conn.execute("DELETE FROM rag.chunks WHERE document = %s", (entry.id,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO rag.chunks (document, seq, collection, groups, content,"
                    " embedding) VALUES (%s,%s,%s,%s,%s,%s::vector)",
                    [
                        (entry.id, i, entry.collection, groups, text, vector(emb))
                        for i, (text, emb) in enumerate(zip(chunks, embeddings, strict=True))
                    ],
                )

    def remove(self, doc_ids: Sequence[str]) -> None:
        with self.connect() as conn, conn.transaction():
            conn.execute("DELETE FROM rag.sources WHERE id = ANY(%s)", (list(doc_ids),))

    def counts(self) -> dict[str, Any]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT collection, status, count(*), coalesce(sum(chunks), 0)"
                " FROM rag.sources GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
        return {
            "collections": [
                {"collection": r[0], "status": r[1], "documents": r[2], "chunks": int(r[3])}
                for r in rows
            ]
        }
