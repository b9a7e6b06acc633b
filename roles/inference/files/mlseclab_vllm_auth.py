"""Require the inference API key on every route of vLLM's OpenAI-compatible server.

vLLM's own check (``--api-key`` or ``VLLM_API_KEY``) guards only paths under ``/v1``,
``/v2``, ``/inference`` and ``/cohere`` (vllm 0.33.0,
``vllm/entrypoints/serve/middleware/authenticate.py``). ``/invocations`` (the whole
generate and embed API, SageMaker style), ``/tokenize``, ``/detokenize``, ``/pooling``,
``/classify``, ``/score``, ``/rerank``, ``/metrics``, ``/load``, ``/scale_elastic_ep``,
``/health``, ``/version`` and the docs answer anyone who reaches the port.

The inference role starts the server with
``vllm serve ... --middleware mlseclab_vllm_auth.RequireKey`` (this file on PYTHONPATH).
vLLM adds it last, so it wraps every other middleware and runs first: each HTTP and
WebSocket request needs ``Authorization: Bearer <VLLM_API_KEY>`` or gets 401 (a WebSocket
is closed before it is accepted). The key is compared by sha256 digest in constant time.
Pure ASGI: nothing beyond the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNAUTHORIZED = b'{"error":"Unauthorized"}'


class RequireKey:
    """ASGI middleware: 401 for any HTTP or WebSocket request without the bearer key."""

    def __init__(self, app: ASGIApp, key: str | None = None) -> None:
        self.app = app
        secret = os.environ.get("VLLM_API_KEY", "") if key is None else key
        if not secret:
            raise RuntimeError("mlseclab_vllm_auth: VLLM_API_KEY is empty; refusing to serve")
        self._digest = hashlib.sha256(secret.encode("utf-8")).digest()

    def authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                offered = hashlib.sha256(token.encode("utf-8")).digest()
                return scheme.lower() == "bearer" and hmac.compare_digest(offered, self._digest)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(UNAUTHORIZED)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": UNAUTHORIZED})
