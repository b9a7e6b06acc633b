"""The result of one posture check, as the plugin records it and every report reads it.

The per-node pytest processes write these as JSON (:meth:`CheckResult.as_dict`); the
runner reads them back (:meth:`CheckResult.from_dict`), so the runner, the reports,
``verify`` and ``drift`` work on this type, never on raw dicts. Which outcomes fail a
run and which are not counted is said here once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


class Outcome(enum.StrEnum):
    """How a check ended (the value is what report.json and the HTML page show)."""

    PASSED = "passed"
    FAILED = "failed"  # the check's assertion failed
    ERROR = "error"  # the check could not run (its setup failed)
    SKIPPED = "skipped"  # a plain pytest skip: not a pass either
    WAIVED = "waived"  # a waiver in the spec applies; what was seen is in ``observed``
    NOT_APPLICABLE = "not_applicable"  # the node cannot have the control (a container)


#: outcomes that make a run (or a node) fail
FAILING: frozenset[Outcome] = frozenset({Outcome.FAILED, Outcome.ERROR, Outcome.SKIPPED})
#: outcomes shown as such, never counted as passed or failed
NOT_COUNTED: frozenset[Outcome] = frozenset({Outcome.WAIVED, Outcome.NOT_APPLICABLE})
#: what a check saw that a waiver turns into ``waived`` (a skip or N/A stays what it is)
WAIVABLE: frozenset[Outcome] = frozenset({Outcome.PASSED, Outcome.FAILED, Outcome.ERROR})


@dataclass(frozen=True)
class CheckResult:
    nodeid: str
    check: str  # the test function's name
    node: str
    role: str
    outcome: Outcome
    observed: Outcome  # what the check itself reported (for a waived check: passed or failed)
    controls: Mapping[str, tuple[str, ...]]  # "lab" and each framework -> ids
    title: str
    evidence: str = ""
    waiver: str = ""
    seconds: float = 0.0

    @property
    def lab_controls(self) -> tuple[str, ...]:
        """The lab's own control ids (``MLSL-...``) this check proves."""
        return tuple(self.controls.get("lab", ()))

    @property
    def failing(self) -> bool:
        return self.outcome in FAILING

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: plain strings and lists, fields in declaration order."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["outcome"] = str(self.outcome)
        out["observed"] = str(self.observed)
        out["controls"] = {k: list(v) for k, v in self.controls.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        """Rebuild a result from :meth:`as_dict`'s JSON (ValueError on an unknown outcome)."""
        return cls(
            nodeid=str(data["nodeid"]),
            check=str(data["check"]),
            node=str(data["node"]),
            role=str(data["role"]),
            outcome=Outcome(data["outcome"]),
            observed=Outcome(data["observed"]),
            controls={str(k): tuple(str(i) for i in v) for k, v in data["controls"].items()},
            title=str(data["title"]),
            evidence=str(data.get("evidence", "")),
            waiver=str(data.get("waiver", "")),
            seconds=float(data.get("seconds", 0.0)),
        )
