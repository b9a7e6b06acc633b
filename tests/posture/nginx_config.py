"""nginx's persisted configuration as nginx itself reads it (``nginx -T``), parsed.

``nginx -T`` tests the configuration and prints every file it loaded, each
after a ``# configuration file PATH:`` line. The files are parsed here into
directives (name, arguments, block). The gateway's nginx.conf carries the
upstream credential (``proxy_set_header Authorization "Bearer ..."``): it is
replaced by ``<redacted>`` while parsing, and the raw text is dropped, so no
check message or traceback can show it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

REDACTED = "<redacted>"
_FILE_MARK = re.compile(r"^# configuration file (.+):$", re.MULTILINE)


@dataclass
class Directive:
    name: str
    args: list[str]
    file: str
    block: list[Directive] | None = None  # None: a simple directive; []: an empty block

    def children(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def __str__(self) -> str:
        return " ".join([self.name, *self.args])


@dataclass
class NginxConfig:
    ok: bool  # nginx -t accepted it
    error: str  # nginx's own message when it did not
    files: dict[str, list[Directive]] = field(default_factory=dict)

    def walk(self) -> Iterator[tuple[tuple[str, ...], Directive]]:
        """Every directive with the names of the blocks around it (outermost first)."""

        def rec(
            ds: list[Directive], ctx: tuple[str, ...]
        ) -> Iterator[tuple[tuple[str, ...], Directive]]:
            for d in ds:
                yield ctx, d
                if d.block is not None:
                    yield from rec(d.block, (*ctx, d.name))

        for directives in self.files.values():
            yield from rec(directives, ())

    def find(self, name: str) -> list[tuple[tuple[str, ...], Directive]]:
        return [(ctx, d) for ctx, d in self.walk() if d.name == name]

    def servers(self) -> list[Directive]:
        return [d for _, d in self.walk() if d.name == "server" and d.block is not None]


def read(host: Any) -> NginxConfig:
    """Run ``nginx -T`` on the node and parse what it printed (credentials redacted)."""
    cmd = host.run("nginx -T 2>&1")
    text = cmd.stdout
    if cmd.rc != 0:
        # nginx prints its own error lines first; keep them, never the dump
        head = "\n".join(line for line in text.splitlines() if line.startswith("nginx:"))
        return NginxConfig(ok=False, error=head[-800:] or f"nginx -T exited {cmd.rc}")
    config = NginxConfig(ok=True, error="")
    marks = list(_FILE_MARK.finditer(text))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        config.files[mark.group(1)] = parse(text[mark.end() : end], mark.group(1))
    return config


def _tokens(text: str) -> Iterator[str]:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in ";{}":
            yield c
            i += 1
        elif c in "\"'":
            j, buf = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            yield "\0" + "".join(buf)  # quoted: never a ; { } token
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}":
                j += 1
            yield text[i:j]
            i = j


def parse(text: str, file: str = "") -> list[Directive]:
    """nginx configuration text to directives (a tolerant parser: nginx -t validated it)."""
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    for tok in _tokens(text):
        if tok == ";":
            if words:
                stack[-1].append(_directive(words, file))
            words = []
        elif tok == "{":
            d = _directive(words or ["?"], file, block=[])
            stack[-1].append(d)
            assert d.block is not None
            stack.append(d.block)
            words = []
        elif tok == "}":
            if len(stack) > 1:
                stack.pop()
            words = []
        else:
            words.append(tok.removeprefix("\0"))
    return stack[0]


def _directive(words: list[str], file: str, block: list[Directive] | None = None) -> Directive:
    name, args = words[0], list(words[1:])
    # an empty value (the header dropped, as on the RAG route) is no credential: kept
    if name == "proxy_set_header" and args and args[0].lower() == "authorization":
        args = [args[0], *([REDACTED] if any(a.strip('"') for a in args[1:]) else args[1:])]
    return Directive(name=name, args=args, file=file, block=block)
