"""The one family of errors a user can cause, and the exit codes.

Every mistake of the user's (a bad spec, a missing tool, a lab that is locked)
raises a :class:`LabError`. The CLI prints its lines and exits with ``ERROR``;
nothing else a user does should reach them as a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OK = 0
ERROR = 1
#: drift found, or a posture check failed: the command worked and the lab is not as specified
FINDINGS = 2
#: the command line was wrong (argparse's 2 is FINDINGS here): EX_USAGE of sysexits.h
USAGE = 64
INTERRUPTED = 130


class LabError(Exception):
    """A problem the user can fix; ``lines`` are printed one per line."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines: tuple[str, ...] = lines


class TargetError(LabError):
    """The target (local host or Proxmox) cannot do what was asked."""


class PreflightError(TargetError):
    """The host is not fit to run the lab; nothing was changed."""


class LockedError(LabError):
    """Another mlseclab run holds the lab's lock."""


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a lab spec, located by line and dotted path."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return printable(f"{self.file}:{self.line}: {where}{self.message}")


def printable(text: str) -> str:
    """``text`` on one line: a newline, control or format character is shown escaped
    (``\\n``, ``\\u202e``), so spec text can never add a line or hide what it says."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class SpecError(LabError):
    """The lab spec is invalid; one :class:`SpecProblem` per mistake."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(*(str(p) for p in self.problems))
