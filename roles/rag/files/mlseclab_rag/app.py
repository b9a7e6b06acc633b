"""The query API: POST /v1/rag/query, served over mutual TLS to the gateway only."""

from __future__ import annotations

import os
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from uvicorn.protocols.http.h11_impl import H11Protocol

from mlseclab_rag import audit
from mlseclab_rag.canary import forbidden
from mlseclab_rag.config import Settings, credential
from mlseclab_rag.inference import Inference, InferenceError
from mlseclab_rag.manifest import canaries, parse_manifest
from mlseclab_rag.normalise import normalise
from mlseclab_rag.principal import HEADER, PrincipalError, parse
from mlseclab_rag.prompt import assemble
from mlseclab_rag.store import Store

SNIPPET = 240


class Query(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(default=4, ge=1, le=8)
    #: False: retrieval only (citations, no answer): what a posture check of the ACL needs,
    #: without a generation's seconds. Every filter on retrieved text applies the same.
    generate: bool = True


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status_code=status)


def peer_is_gateway(cert: dict[str, Any] | None, names: list[str]) -> bool:
    """The client certificate (already verified against the lab CA) names the gateway."""
    if not cert:
        return False
    dns = {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}
    cns = {v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"}
    return bool((dns | cns) & set(names))


def gateway_only(names: list[str]) -> type[H11Protocol]:
    class GatewayOnly(H11Protocol):
        """Closes any TLS connection whose client certificate is not the gateway's."""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            cert = transport.get_extra_info("peercert")
            if not peer_is_gateway(cert, names):
                peer = transport.get_extra_info("peername")
                audit.event(
                    "rag.refused",
                    reason="client certificate is not the gateway's",
                    peer=str(peer[0]) if peer else "",
                )
                transport.close()
                return
            super().connection_made(transport)

    return GatewayOnly


def create_app(settings: Settings) -> FastAPI:
    max_age = int(settings["principal"]["max_age"])
    store = Store(settings["vectordb"], settings["vectordb"]["user"], credential("db-password"))
    inf = settings["inference"]
    inference = Inference(
        inf["url"], credential("inference-api-key"), inf["embedding_model"], inf["completion_model"]
    )
    manifest = Path(settings["corpus"]["dir"]) / "manifest.yaml"
    planted: dict[str, tuple[str, ...]] = {}
    if manifest.is_file():
        with manifest.open(encoding="utf-8") as f:
            planted = canaries(parse_manifest(yaml.safe_load(f)))
    canary_filter = bool(settings.get("canary_filter", True))
    metrics = audit.QueryMetrics(settings.get("metrics_file"))
    max_tokens = int(settings["generation"]["max_tokens"])
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/rag/query")
    def query(body: Query, request: Request) -> JSONResponse:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        try:
            who = parse(request.headers.get(HEADER), time.time(), max_age)
        except PrincipalError as exc:
            audit.event("rag.refused", reason=str(exc), request_id=request_id)
            metrics.queries.labels("-", "refused").inc()
            metrics.write()
            return _error(403, "forbidden", str(exc))
        question = normalise(body.question).text
        t0 = time.monotonic()
        try:
            [embedding] = inference.embed([question])
            chunks = store.search(who.assertion, embedding, body.top_k)
        except InferenceError as exc:
            return _error(502, "upstream", str(exc))
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.RaiseException) as exc:
            # rag.principal_groups() refused the assertion: its MAC does not verify
            reason = (exc.diag.message_primary or "principal refused by the database")[:200]
            audit.event("rag.refused", reason=reason, request_id=request_id)
            metrics.queries.labels("-", "refused").inc()
            metrics.write()
            return _error(403, "forbidden", reason)
        t1 = time.monotonic()
        scores = [c.score for c in chunks]
        collections = sorted({c.collection for c in chunks})
        citations = [
            {
                "document": c.document,
                "collection": c.collection,
                "chunk": c.seq,
                "score": round(c.score, 4),
                "snippet": c.content[:SNIPPET],
            }
            for c in chunks
        ]
        record = {
            "request_id": request_id,
            "client": who.client,
            "groups": list(who.groups),
            "chunks": len(chunks),
            "collections": collections,
            "documents": sorted({c.document for c in chunks}),
            "scores": audit.score_summary(scores),
        }

        def blocked(tokens: list[str], stage: str) -> JSONResponse:
            audit.event("rag.canary_blocked", stage=stage, canaries=len(tokens), **record)
            metrics.queries.labels(who.client, "blocked").inc()
            metrics.canary_blocks.labels(who.client).inc()
            metrics.write()
            return _error(
                451,
                "canary_blocked",
                "the answer would disclose a document you may not read; it was blocked and logged",
                request_id=request_id,
            )

        if canary_filter:
            leaked = forbidden([c["snippet"] for c in citations], who.groups, planted)
            if leaked:
                return blocked(leaked, "retrieval")
        answer: str | None = None  # stays None for a retrieval-only request
        if body.generate and chunks:
            try:
                answer = inference.complete(assemble(question, chunks), max_tokens)
            except InferenceError as exc:
                return _error(502, "upstream", str(exc))
        elif body.generate:
            answer = "No document you may read answers that."
        t2 = time.monotonic()
        if canary_filter and answer is not None:
            leaked = forbidden([answer], who.groups, planted)
            if leaked:
                return blocked(leaked, "generation")
        timings = {
            "retrieval_ms": round((t1 - t0) * 1000, 1),
            "generation_ms": round((t2 - t1) * 1000, 1),
        }
        outcome = "answered" if answer is not None else "retrieved"
        audit.event("rag.query", outcome=outcome, **record, **timings)
        metrics.queries.labels(who.client, outcome).inc()
        metrics.chunks.observe(len(chunks))
        for c in chunks:
            metrics.scores.observe(max(0.0, c.score))
            metrics.collections.labels(who.client, c.collection).inc()
        metrics.seconds.labels("retrieval").observe(t1 - t0)
        metrics.seconds.labels("generation").observe(t2 - t1)
        metrics.write()
        return JSONResponse(
            {
                "answer": answer,
                "citations": citations,
                "principal": who.client,
                "request_id": request_id,
                "timings": timings,
            }
        )

    @app.get("/v1/rag/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(settings: Settings) -> None:
    tls = settings["tls"]
    config = uvicorn.Config(
        create_app(settings),
        host=settings["listen"]["host"],
        port=int(settings["listen"]["port"]),
        http=gateway_only(list(tls["gateway_names"])),
        ssl_certfile=tls["cert"],
        ssl_keyfile=credential_path("tls-key"),
        ssl_ca_certs=tls["ca"],
        ssl_cert_reqs=ssl.CERT_REQUIRED if tls.get("require_client_cert", True) else ssl.CERT_NONE,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        access_log=False,
        log_config=None,
        timeout_keep_alive=30,
        loop="asyncio",
    )
    uvicorn.Server(config).run()


def credential_path(name: str) -> str:
    """Where systemd put a credential (uvicorn wants the TLS key as a file)."""
    return str(Path(os.environ["CREDENTIALS_DIRECTORY"]) / name)
