"""YAML loading that remembers where every key and item came from.

``load_with_lines`` returns the plain data together with a map from a path
(tuple of keys and indexes) to its 1-based line, so that a validation error
deep inside the spec can name the line it is about. Duplicate mapping keys,
which PyYAML silently collapses, are reported instead.

The text is bounded before anything is built from it: the event stream (which
PyYAML produces without recursion) is walked first, refusing nesting deeper
than :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values once aliases are
expanded (an alias bomb), and an alias inside its own anchor (a recursive
structure). Every error PyYAML can raise becomes a :class:`YamlSyntaxError`
with a line; none escapes as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml import events

Path = tuple[str | int, ...]


@dataclass
class Located:
    """Parsed YAML data plus where each path starts."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int, int]] = field(default_factory=list)

    def line_of(self, path: Path) -> int:
        """The line of ``path`` or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), 1)


#: Deepest nesting of mappings and lists; the spec itself needs 4 (lab.proxmox.template.vm_id).
MAX_DEPTH = 32
#: Most values (scalars, mappings, lists) a spec may expand to, every alias counted as a copy
#: of its anchor. A 200-node spec has about 8,000.
MAX_VALUES = 100_000

SYNTAX_FIX = "fix the YAML (indentation, quoting, ':' after keys)"


class YamlSyntaxError(Exception):
    """YAML this loader does not read; ``message`` is the whole sentence, with what to do."""

    def __init__(self, line: int, problem: str, fix: str = SYNTAX_FIX, *, syntax: bool = True):
        self.line = line
        self.problem = problem
        self.message = (f"YAML syntax error: {problem}" if syntax else problem) + f"; {fix}"
        super().__init__(self.message)


def _bound(text: str, loader: type[yaml.SafeLoader]) -> None:
    """Refuse deep nesting, alias bombs and recursive aliases before composing ``text``."""
    depth = 0
    values = 0
    sizes: dict[str, int] = {}  # anchor -> values it stands for
    open_anchors: list[tuple[str | None, int]] = []  # per open collection: anchor, values before
    for event in yaml.parse(text, Loader=loader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, events.AliasEvent):
            anchor = str(event.anchor)
            if any(a == anchor for a, _ in open_anchors):
                raise YamlSyntaxError(
                    line,
                    f"alias *{anchor} is inside its own anchor &{anchor}, a recursive structure",
                    f"write the values out instead of *{anchor} (a lab spec is a tree)",
                    syntax=False,
                )
            values += sizes.get(anchor, 1)
        elif isinstance(event, events.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlSyntaxError(
                    line,
                    f"the YAML nests deeper than {MAX_DEPTH} levels",
                    "a lab spec needs a few (see inventories/reference/lab.yaml)",
                    syntax=False,
                )
            open_anchors.append((event.anchor, values))
            values += 1
        elif isinstance(event, events.CollectionEndEvent):
            depth -= 1
            closed, before = open_anchors.pop()
            if closed is not None:
                sizes[closed] = values - before
        elif isinstance(event, events.ScalarEvent):
            values += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        if values > MAX_VALUES:
            raise YamlSyntaxError(
                line,
                f"the YAML expands to more than {MAX_VALUES} values, aliases counted as copies "
                "(an alias bomb?)",
                "write the values out instead of nesting aliases",
                syntax=False,
            )


def _construct(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError) as exc:  # e.g. a 5000-digit int, a 13th month
        value = str(node.value) if isinstance(node, yaml.ScalarNode) else node.tag
        shown = value if len(value) <= 40 else value[:40] + "..."
        why = _flat(str(exc)).split(";")[0]  # not Python's advice (sys.set_int_max_str_digits)
        raise YamlSyntaxError(
            node.start_mark.line + 1,
            f"cannot read the value {shown!r} ({why[:1].lower()}{why[1:]})",
            "correct it, or quote it to make it a string",
            syntax=False,
        ) from None


def _flat(text: str) -> str:
    return " ".join(text.split())


def _walk(node: yaml.Node, path: Path, loader: yaml.SafeLoader, out: Located) -> Any:
    out.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlSyntaxError(
                    key_line,
                    "merge keys (<<) are not supported in a lab spec",
                    "write the keys out",
                    syntax=False,
                )
            key = _construct(key_node, loader)
            if not isinstance(key, str | int):
                key = str(key)
            child: Path = (*path, key)
            if key in first_line:
                out.duplicates.append((child, key_line, first_line[key]))
                continue
            first_line[key] = key_line
            out.lines[child] = key_line
            result[key] = _walk(value_node, child, loader, out)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), loader, out) for i, item in enumerate(node.value)]
    return _construct(node, loader)


def _load(text: str, loader_class: type[yaml.SafeLoader]) -> Located:
    _bound(text, loader_class)
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        out = Located(data=None)
        if root is not None:
            out.data = _walk(root, (), loader, out)
        return out
    finally:
        loader.dispose()


#: libyaml when present (20 times faster); its error wording differs, so a text it refuses
#: is read again by the pure-Python loader, whose messages are the ones users see.
_FAST: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def load_with_lines(text: str) -> Located:
    """Parse one YAML document; raise :class:`YamlSyntaxError` on bad or unbounded YAML."""
    if _FAST is not None:
        try:
            return _load(text, _FAST)
        except (yaml.YAMLError, UnicodeError):  # UnicodeError: libyaml reads UTF-8 only
            pass  # report it in the pure-Python loader's words, below
    try:
        return _load(text, yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(text, exc) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(line, problem) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, _flat(str(exc)) or "invalid YAML") from None


def _reader_error(text: str, exc: yaml.reader.ReaderError) -> YamlSyntaxError:
    """A character YAML does not allow (a control character), located by its line."""
    position = max(0, min(int(exc.position), len(text)))
    line = text.count("\n", 0, position) + 1
    char = exc.character
    code = char if isinstance(char, int) else ord(str(char)[:1] or "\0")
    what = "control character" if code < 0x20 or 0x7F <= code < 0xA0 else "character"
    escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return YamlSyntaxError(
        line,
        f"the {what} U+{code:04X} is not allowed in YAML",
        f"delete it (inside a double-quoted string, write it as the escape {escape})",
    )
