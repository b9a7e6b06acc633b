"""The model server on inference-01 (OpenAI-compatible): embeddings and completions."""

from __future__ import annotations

import math
from typing import Any

import httpx


class InferenceError(RuntimeError):
    pass


class Inference:
    def __init__(self, url: str, key: str, embedding_model: str, completion_model: str) -> None:
        self.client = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(300.0, connect=5.0),
        )
        self.embedding_model = embedding_model
        self.completion_model = completion_model

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            r = self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise InferenceError(f"inference {path}: {exc}") from exc
        if r.status_code != 200:
            raise InferenceError(f"inference {path}: HTTP {r.status_code} {r.text[:200]}")
        return r.json()

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings (the model's are not normalised), in input order."""
        data = self._post("/embeddings", {"model": self.embedding_model, "input": texts})
        rows = sorted(data["data"], key=lambda d: d["index"])
        out = []
        for row in rows:
            vec = row["embedding"]
            if vec and isinstance(vec[0], list):  # token-level output: mean-pool it
                vec = [sum(col) / len(vec) for col in zip(*vec, strict=True)]
            norm = math.sqrt(sum(x * x for x in vec)) or 1.0
            out.append([x / norm for x in vec])
        return out

    def complete(self, prompt: str, max_tokens: int) -> str:
        data = self._post(
            "/completions",
            {
                "model": self.completion_model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "stop": ["\nQuestion:", "<<<", "UNTRUSTED>>>", "\n\n\n"],
            },
        )
        return str(data["choices"][0]["text"]).strip()
