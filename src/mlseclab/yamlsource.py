"""YAML loading that remembers where every key and item came from.

``load_with_lines`` returns the plain data together with a map from a path
(tuple of keys and indexes) to its 1-based line, so that a validation error
deep inside the spec can name the line it is about. Duplicate mapping keys,
which PyYAML silently collapses, are reported instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

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


class YamlSyntaxError(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


def _walk(node: yaml.Node, path: Path, loader: yaml.SafeLoader, out: Located) -> Any:
    out.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
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
    try:
        return loader.construct_object(node, deep=True)
    except ValueError:  # looks like a timestamp but is none (2027-13-01): keep the text
        return node.value


def load_with_lines(text: str) -> Located:
    """Parse one YAML document; raise :class:`YamlSyntaxError` on bad YAML."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        out = Located(data=None)
        if root is not None:
            out.data = _walk(root, (), loader, out)
        return out
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(line, problem) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, str(exc)) from None
    finally:
        loader.dispose()
