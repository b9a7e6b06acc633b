"""Prompt-injection screening of a document before it is indexed (OWASP LLM01, ATLAS AML.T0051).

Heuristics only: phrases that address the model rather than the reader, chat-template
and role markers, exfiltration through links, and text hidden with invisible
characters. A document with any finding is quarantined, never indexed; the reasons go
into the ingest report and the audit log. This is a screen, not a proof: the query
side still delimits retrieved text as untrusted data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_I = re.IGNORECASE
#: (reason, pattern): each match is one finding.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "instruction override",
        re.compile(
            r"\b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b(previous|prior|above|"
            r"earlier|all|any|your|the)\b[^.\n]{0,30}\b(instructions?|prompts?|rules|guidelines|"
            r"directions|context)\b",
            _I,
        ),
    ),
    (
        "role reassignment",
        re.compile(
            r"\b(you are now|from now on,? you|act as (an? )?(unfiltered|unrestricted|"
            r"jailbroken)|pretend (to be|you are)|developer mode|do anything now)\b",
            _I,
        ),
    ),
    (
        "system prompt probing",
        re.compile(
            r"\b(reveal|print|show|repeat|output|leak)\b[^.\n]{0,30}\b(system|hidden|secret|"
            r"initial)\s+(prompt|instructions?|message)\b",
            _I,
        ),
    ),
    (
        "chat template marker",
        re.compile(
            r"(<\|(im_start|im_end|system|assistant|user|endoftext)\|>|<start_of_turn>|"
            r"\[/?INST\]|<</?SYS>>|^\s*#{2,}\s*(system|instruction)s?\s*:?\s*$)",
            _I | re.MULTILINE,
        ),
    ),
    (
        "role header",
        re.compile(r"^\s*(system|assistant)\s*:\s*\S", _I | re.MULTILINE),
    ),
    (
        "addressed to the model",
        re.compile(
            r"\b(note|message|instructions?) (to|for) (the )?(ai|assistant|model|llm|chatbot)\b|"
            r"\b(ai|assistant|llm|language model)s?,? (must|should|will) (now )?(say|answer|"
            r"respond|reply|include|output)\b",
            _I,
        ),
    ),
    (
        "exfiltration link",
        re.compile(r"!\[[^\]]*\]\(\s*https?://[^)\s]*[?&][^)\s]*=", _I),
    ),
    (
        "secret solicitation",
        re.compile(
            r"\b(send|post|forward|exfiltrate|include)\b[^.\n]{0,40}\b(api[ _-]?keys?|"
            r"passwords?|credentials|tokens?|secrets?)\b[^.\n]{0,40}\b(to|at|in)\b",
            _I,
        ),
    ),
)
#: More invisible characters than this in one document is itself a finding.
MAX_INVISIBLE = 3


@dataclass(frozen=True)
class Verdict:
    reasons: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


def screen(text: str, invisible: int = 0) -> Verdict:
    """Findings in the normalised ``text``; ``invisible`` counts what normalising removed."""
    reasons: list[str] = []
    for reason, pattern in PATTERNS:
        match = pattern.search(text)
        if match:
            excerpt = " ".join(match.group(0).split())[:60]
            reasons.append(f"{reason}: {excerpt!r}")
    if invisible > MAX_INVISIBLE:
        reasons.append(f"hidden text: {invisible} invisible characters removed")
    return Verdict(tuple(reasons))
