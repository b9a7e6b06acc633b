"""Loading a spec: read the file (carefully), parse the YAML with its lines, validate
each field (pydantic), then the whole lab (:mod:`mlseclab.spec.rules`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path as FsPath

from pydantic import ValidationError

from mlseclab.errors import SpecError, SpecProblem
from mlseclab.spec.messages import clean_loc, describe, dotted
from mlseclab.spec.rules import check_rules
from mlseclab.spec.schema import LabSpec
from mlseclab.yamlsource import Located, YamlSyntaxError, load_with_lines


def parse_spec(text: str, file: str, target: str | None = None) -> LabSpec:
    """Parse and validate a spec for ``target`` (default: its ``lab.target``); raise
    :class:`SpecError` listing every problem."""
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise SpecError(
            [
                SpecProblem(
                    file,
                    1,
                    "",
                    (
                        "the file is empty; a lab spec needs the keys lab, networks and nodes "
                        "(see inventories/reference/lab.yaml)"
                    ),
                )
            ]
        )
    try:
        located = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise SpecError([SpecProblem(file, exc.line, "", exc.message)]) from None
    return validate_data(located, file, target)


def validate_data(located: Located, file: str, target: str | None = None) -> LabSpec:
    problems: list[SpecProblem] = []
    for path, line, first in located.duplicates:
        what = "node name" if len(path) == 2 and path[0] == "nodes" else "key"
        problems.append(
            SpecProblem(
                file,
                line,
                dotted(path),
                f"duplicate {what} {path[-1]!r} (first at line {first}); "
                f"each {what} must be unique",
            )
        )
    if not isinstance(located.data, dict):
        problems.append(
            SpecProblem(
                file,
                1,
                "",
                (
                    "expected a mapping with keys lab, networks, nodes; "
                    f"got {type(located.data).__name__}"
                ),
            )
        )
        raise SpecError(problems)
    try:
        spec = LabSpec.model_validate(located.data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = clean_loc(tuple(err["loc"]))
            problems.append(SpecProblem(file, located.line_of(loc), dotted(loc), describe(err)))
        raise SpecError(sorted(problems, key=lambda p: p.line)) from None
    for path, message in check_rules(spec, target):
        problems.append(SpecProblem(file, located.line_of(path), dotted(path), message))
    if problems:
        raise SpecError(sorted(problems, key=lambda p: p.line))
    return spec


#: The largest spec file read: the reference spec is 5 KB and a 200-node spec about 55 KB.
MAX_SPEC_BYTES = 1024 * 1024


def _refuse(file: str, message: str) -> SpecError:
    return SpecError([SpecProblem(file, 0, "", message)])


def _read_spec(p: FsPath) -> str:
    """The spec's text, read without blocking and without reading more than the cap.

    O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a terminal is
    never adopted. Only a regular file is read, and at most MAX_SPEC_BYTES + 1 bytes of
    it, so /dev/zero or a growing file cannot be read forever.
    """
    file = str(p)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise _refuse(
            file, "no such file; pass a lab spec such as inventories/reference/lab.yaml"
        ) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise _refuse(
            file,
            f"cannot read the spec: {exc.__class__.__name__}; pass a readable UTF-8 YAML file",
        ) from None
    except OSError as exc:  # a socket (ENXIO), a loop of symlinks, a name too long, ...
        raise _refuse(
            file,
            f"cannot read the spec: {exc.strerror or exc.__class__.__name__}; "
            "pass a readable UTF-8 YAML file",
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _refuse(
                file, "cannot read the spec: IsADirectoryError; pass a readable UTF-8 YAML file"
            )
        if not stat.S_ISREG(mode):
            raise _refuse(
                file,
                f"is not a regular file (it is {_file_kind(mode)}); "
                "pass a lab spec file such as inventories/reference/lab.yaml",
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SPEC_BYTES:
            chunk = os.read(fd, MAX_SPEC_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _refuse(
            file,
            f"cannot read the spec: {exc.strerror or exc.__class__.__name__}; "
            "pass a readable UTF-8 YAML file",
        ) from None
    finally:
        os.close(fd)
    if size > MAX_SPEC_BYTES:
        raise _refuse(
            file,
            f"the spec is larger than {MAX_SPEC_BYTES // 1024} KiB; a lab spec is a few KB "
            "(200 nodes fit in about 55 KB): pass the lab's spec, not another file",
        )
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(
            file, "cannot read the spec: UnicodeDecodeError; pass a readable UTF-8 YAML file"
        ) from None


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


def load_spec(path: str | FsPath, target: str | None = None) -> LabSpec:
    """Read and validate the spec at ``path`` for ``target`` (default: its ``lab.target``);
    raise :class:`SpecError` on any problem."""
    p = FsPath(path)
    return parse_spec(_read_spec(p), str(p), target)
