"""The posture suite: where its checks live and which control ids they carry.

This module imports neither pytest nor the suite, so that ``mlseclab validate``
can check waivers against the catalogue quickly.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from mlseclab import checkout
from mlseclab.errors import SpecError, SpecProblem
from mlseclab.spec import LabSpec, Waiver
from mlseclab.spec.messages import suggest

_MARKER = re.compile(r"mark\.control\(\s*[\"']([^\"']+)[\"']")


def controls() -> set[str]:
    """The lab control ids the suite's checks carry (first argument of each control marker)."""
    found: set[str] = set()
    for path in sorted(checkout.posture_suite().glob("test_*.py")):
        found.update(_MARKER.findall(path.read_text(encoding="utf-8")))
    return found


def check_waivers(spec: LabSpec, spec_path: Path) -> None:
    """A waiver must name a control some check carries: a typo would waive nothing, silently.

    Raises :class:`SpecError` with one line per such waiver.
    """
    if not spec.posture.waivers:
        return
    known = controls()
    bad = [(i, w.control) for i, w in enumerate(spec.posture.waivers) if w.control not in known]
    if not bad:
        return
    problems = []
    for i, control in bad:
        prefix = control.rsplit("-", 1)[0]
        near = sorted(c for c in known if c.startswith(prefix))
        close = "" if near else suggest(control, sorted(known))
        near = near or sorted(known)[:8]
        problems.append(
            SpecProblem(
                str(spec_path),
                _line_of(spec_path, ("posture", "waivers", i, "control")),
                f"posture.waivers[{i}].control",
                f"{control} is not a control any posture check carries; "
                f"valid ids include {', '.join(near[:12])}{close}",
            )
        )
    raise SpecError(problems)


def expired_waivers(
    spec: LabSpec, spec_path: Path, today: dt.date | None = None
) -> list[SpecProblem]:
    """The waivers whose ``expires`` date has passed: they no longer apply (a warning)."""
    today = today or dt.date.today()
    return [
        SpecProblem(
            str(spec_path),
            _line_of(spec_path, ("posture", "waivers", i, "expires")),
            f"posture.waivers[{i}].expires",
            f"the waiver of {w.control} expired on {w.expires.isoformat()} and no longer "
            "applies; renew it with a later date or remove it",
        )
        for i, w in enumerate(spec.posture.waivers)
        if w.expires is not None and w.expired(today)
    ]


def waiver_for(
    waivers: Sequence[Waiver], controls: Iterable[str], node: str, today: dt.date | None = None
) -> str:
    """The reason of the first waiver in force for one of ``controls`` on ``node`` ("" if none).

    Whether a waiver names a real control and real nodes is :func:`check_waivers`'s and
    the spec's job (``mlseclab validate``); this only applies them.
    """
    today = today or dt.date.today()
    ids = tuple(controls)
    for w in waivers:
        if not w.expired(today) and any(w.covers(c, node) for c in ids):
            return w.reason
    return ""


def _line_of(spec_path: Path, path: tuple[str | int, ...]) -> int:
    from mlseclab.yamlsource import YamlSyntaxError, load_with_lines

    try:
        return load_with_lines(spec_path.read_text(encoding="utf-8")).line_of(path)
    except (OSError, UnicodeDecodeError, YamlSyntaxError):
        return 0
