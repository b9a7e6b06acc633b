"""mlseclab's RAG service: ingest a corpus into pgvector, answer under the caller's identity.

Run by the node's /usr/bin/python3 from Debian packages (fastapi, uvicorn, psycopg,
httpx, prometheus-client, yaml); no virtual environment, no pip. The pure pieces
(normalise, screen, chunk, manifest, principal, canary, prompt) import nothing beyond
the standard library, so the unit tests run them on the operator's machine.
"""
