"""The wording of spec problems: pydantic's errors said in the lab's words, dotted paths,
and the "did you mean" hint.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from mlseclab.spec.schema import LabSpec


def suggest(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the choice closest to ``word``; "" when none is close.

    The one did-you-mean of the project: spec problems and the commands' refusals both
    end with it.
    """
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def one_of(choices: Iterable[str]) -> str:
    items = sorted(c if _PLAIN_KEY.fullmatch(c) else repr(c) for c in set(choices))
    return ", ".join(items) if items else "(none declared)"


_TYPE_WORDS = {
    "int": "a whole number",
    "string": "a string",
    "bool": "true or false",
    "dict": "a mapping",
    "model": "a mapping",
    "list": "a list",
    "float": "a number",
    "date": "a date (YYYY-MM-DD)",
}


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model ``annotation`` holds directly (through Annotated and Optional), if any."""
    for member in _alternatives(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _alternatives(annotation: Any) -> list[Any]:
    """``annotation`` without Annotated and None: its members if it is a union, else itself."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _alternatives(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return [m for a in get_args(annotation) if a is not type(None) for m in _alternatives(a)]
    return [annotation]


def _walk_loc(loc: Iterable[str | int]) -> tuple[tuple[str | int, ...], Any]:
    """Follow a pydantic error location down the schema of :class:`LabSpec`.

    Returns the location without the union member tags pydantic inserts (a tag
    stands where the schema has a union of several types) and the annotation the
    location points at (None once it leaves the schema, e.g. under an unknown key).
    """
    clean: list[str | int] = []
    annotation: Any = LabSpec
    tagged = False
    for part in loc:
        members = _alternatives(annotation) if annotation is not None else []
        if len(members) > 1 and not tagged:  # this part names the member pydantic tried
            annotation = next((m for m in members if getattr(m, "__name__", "") == part), None)
            tagged = True
            continue
        tagged = False
        clean.append(part)
        if not members:
            continue
        inner = members[0]
        model = _inner_model(inner)
        if model is not None:
            field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
            annotation = field.annotation if field is not None else None
        elif get_origin(inner) in (dict, list) and get_args(inner):
            annotation = get_args(inner)[-1]
        else:
            annotation = None
    return tuple(clean), annotation


def _model_at(loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The pydantic model that the location ``loc`` points into, if any."""
    return _inner_model(_walk_loc(loc)[1])


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def describe(err: Any) -> str:
    """The message for one pydantic error: what is wrong; what would be valid."""
    kind: str = err["type"]
    shown = _shown(err.get("input"))
    loc = clean_loc(tuple(err["loc"]))
    parent = _model_at(loc[:-1]) if loc else None
    key = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        if parent is None:
            return f"unknown key {key!r}; remove it (see inventories/reference/lab.yaml)"
        names = _field_names(parent)
        return f"unknown key {key!r}; valid keys here: {one_of(names)}" + suggest(key, names)
    if kind == "missing":
        field = parent.model_fields.get(key) if parent is not None else None
        what = f": {field.description}" if field is not None and field.description else ""
        return f"required key {key!r} is missing; add it{what}"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"{shown} is not allowed; valid: {expected}"
    if kind == "int_from_float":
        return f"expected a whole number, got {shown}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        word = kind.split("_", 1)[0]
        return f"expected {_TYPE_WORDS.get(word, word)}, got {shown}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return (
            f"{shown} is out of range; {err['msg'].lower().replace('input should be ', 'must be ')}"
        )
    if kind == "string_too_short":
        least = err.get("ctx", {}).get("min_length", 1)
        return f"{shown} is too short; write at least {least} characters"
    if kind in ("too_short", "too_long"):
        msg = str(err["msg"])
        return msg.replace("List", "this list").replace("Dictionary", "this mapping")
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return str(err["msg"])


def dotted(loc: Iterable[str | int]) -> str:
    """``nodes.rag-01.nics[0].ip``; a key that is not a plain word is shown quoted, so a
    newline or markup in a key can never split or restyle the message line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not _PLAIN_KEY.fullmatch(text):
                text = repr(text)
            out += ("." if out else "") + text
    return out


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``loc`` without the union member names pydantic inserts (e.g. 'int', 'ProxmoxTemplate')."""
    return _walk_loc(loc)[0]
