"""Split normalised text into overlapping chunks along paragraph and sentence breaks."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _pieces(text: str, size: int) -> list[str]:
    """Paragraphs, split further at sentence ends (and hard at ``size``) when too long."""
    out: list[str] = []
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        if len(para) <= size:
            out.append(para)
            continue
        for sentence in _SENTENCE_END.split(para):
            while len(sentence) > size:
                out.append(sentence[:size])
                sentence = sentence[size:]
            if sentence:
                out.append(sentence)
    return out


def chunk(text: str, size: int = 800, overlap: int = 120) -> list[str]:
    """Chunks of at most ``size`` characters; each after the first starts with up to
    ``overlap`` characters of the one before, so a fact cut at a boundary is in both."""
    if size < 50 or not 0 <= overlap < size // 2:
        raise ValueError("chunk size must be >= 50 and overlap < size / 2")
    chunks: list[str] = []
    current = ""
    for piece in _pieces(text, size - overlap):
        candidate = f"{current}\n\n{piece}" if current else piece
        if len(candidate) <= size:
            current = candidate
            continue
        chunks.append(current)
        tail = current[-overlap:] if overlap else ""
        if tail and " " in tail:
            tail = tail[tail.index(" ") + 1 :]
        current = f"{tail} {piece}".strip() if tail else piece
    if current:
        chunks.append(current)
    return chunks
