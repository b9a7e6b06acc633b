"""Documents to plain text: HTML to text, Unicode NFKC, no invisible or control characters."""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

#: Characters that render as nothing (or reorder text) and so can hide instructions.
INVISIBLE = re.compile(
    "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)
_SPACES = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption"}
    | {"footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol"}
    | {"p", "pre", "section", "table", "td", "th", "tr", "ul"}
)
_HIDDEN_TAGS = frozenset({"script", "style", "template", "noscript", "head", "title"})


@dataclass(frozen=True)
class Normalised:
    text: str
    invisible: int  # invisible/format characters removed
    controls: int  # control characters removed (tab and newline are kept)


class _TextOnly(HTMLParser):
    """HTML to text: block elements become line breaks; script, style and comments vanish."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    return html.unescape("".join(parser.parts))


def normalise(text: str, kind: str = "text") -> Normalised:
    """``text`` (of ``kind`` text, markdown or html) as NFKC plain text without invisible
    or control characters, spaces collapsed, at most one blank line in a row."""
    if kind == "html":
        text = html_to_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFKC", text)
    text, invisible = INVISIBLE.subn("", text)
    kept: list[str] = []
    controls = 0
    for ch in text:
        if ch in "\n\t" or unicodedata.category(ch)[0] != "C":
            kept.append(ch)
        else:
            controls += 1
    text = "".join(kept)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    return Normalised(text=text, invisible=invisible, controls=controls)
