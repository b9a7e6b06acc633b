"""`mlseclab attack`: emulate the adversary from inside the lab.

:func:`run` brings up the attacker's positions, runs each scenario of
:mod:`mlseclab.attack.scenarios` in order while :class:`~mlseclab.attack.alerts.AlertWatch`
polls Alertmanager, then waits (at most ``detect_timeout`` seconds after the last
scenario) for the alerts each scenario should raise. The report says, per
scenario: blocked (with the evidence), detected (which alert, how many seconds
after the scenario began) or missed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mlseclab.attack.alerts import AlertWatch, SeenAlert
from mlseclab.attack.positions import EdgeClient
from mlseclab.attack.scenarios import BY_ID, SCENARIOS, Attack, Finding, Scenario
from mlseclab.context import Context
from mlseclab.errors import LabError
from mlseclab.spec import Role
from mlseclab.spec.messages import suggest

#: ATLAS tactics for the report's matrix, and the techniques the scenarios exercise.
TACTICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Reconnaissance", ("AML.T0006",)),
    ("Initial Access", ("AML.T0049", "AML.T0012", "AML.T0010.002", "AML.T0010.003")),
    ("AI Model Access", ("AML.T0040",)),
    ("Execution", ("AML.T0011.000", "AML.T0051.001")),
    ("Persistence", ("AML.T0070", "AML.T0018.002")),
    ("Privilege Escalation", ("AML.T0105",)),
    ("Credential Access", ("AML.T0055", "AML.T0082")),
    ("Collection", ("AML.T0036",)),
    ("Command and Control", ("AML.T0072",)),
    ("Exfiltration", ("AML.T0024.002", "AML.T0025")),
    ("Impact", ("AML.T0034",)),
)


@dataclass
class Outcome:
    scenario: Scenario
    finding: Finding | None
    started: float
    finished: float
    error: str = ""
    detections: list[dict[str, Any]] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return self.finding is not None and self.finding.blocked and not self.error

    @property
    def detected(self) -> bool:
        return bool(self.detections)

    @property
    def verdict(self) -> str:
        if not self.blocked:
            return "missed"
        return "blocked, detected" if self.detected else "blocked"

    def as_dict(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "id": s.id,
            "title": s.title,
            "position": s.position,
            "atlas": list(s.atlas),
            "owasp": list(s.owasp),
            "expected_alerts": list(s.alerts),
            "verdict": self.verdict,
            "blocked": self.blocked,
            "detected": self.detected,
            "detections": self.detections,
            "evidence": (self.finding.evidence if self.finding else []),
            "error": self.error,
            "started": round(self.started, 3),
            "seconds": round(self.finished - self.started, 1),
        }


def choose(ids: list[str], spec_path: str) -> list[Scenario]:
    if not ids:
        return list(SCENARIOS)
    out = []
    for i in ids:
        if i not in BY_ID:
            raise LabError(
                f"unknown scenario {i!r}; the scenarios: {', '.join(BY_ID)}{suggest(i, BY_ID)}"
            )
        out.append(BY_ID[i])
    return out


def _detect(outcome: Outcome, watch: AlertWatch, attack_start: float) -> None:
    """Alerts of the scenario's kinds, labelled for it, that began after it started.

    An alert begins a scrape, a collection and an evaluation after its cause (15-45 s
    on the reference lab), by when later scenarios have started, so the window has no
    end but the run's wait; scenarios of one run that share an alert (name and labels)
    each count it, and the report names the others (``shared_with``)."""
    s, f = outcome.scenario, outcome.finding
    labels = f.alert_labels if f else {}
    for name in s.alerts:
        want = labels.get(name, {})
        for seen in watch.find(name, want):
            fresh = seen.starts_at >= outcome.started - 1
            # still firing from an earlier scenario of this run (never from before the run)
            carried = (
                attack_start - 1 <= seen.starts_at < outcome.started - 1
                and seen.last_seen >= outcome.started
            )
            if fresh or carried:
                outcome.detections.append(_detection(seen, outcome, carried))
                break


def _detection(seen: SeenAlert, outcome: Outcome, carried: bool) -> dict[str, Any]:
    d = seen.as_dict()
    d["delay_seconds"] = None if carried else round(seen.starts_at - outcome.started, 1)
    d["already_firing"] = carried
    return d


def run(
    ctx: Context,
    scenarios: list[Scenario],
    detect_timeout: float = 150.0,
    progress: Any = None,
) -> dict[str, Any]:
    if ctx.target != "local":
        raise LabError(
            f"lab {ctx.spec.lab.name} is on target {ctx.target}: `mlseclab attack` runs on the "
            "local target only (the edge client is a namespace on this host)"
        )
    if not ctx.home.ssh_config.exists():
        raise LabError(f"lab {ctx.spec.lab.name} is not up: run `mlseclab up` first")
    obs = sorted(n for n, node in ctx.spec.nodes.items() if node.role is Role.OBSERVABILITY)
    watch = (
        AlertWatch(str(ctx.home.ssh_config), obs[0], ctx.topology.nodes[obs[0]].mgmt.ip)
        if obs
        else None
    )
    started = time.time()
    outcomes: list[Outcome] = []
    alert_errors = [] if watch else ["the lab has no observability node: nothing detects"]
    roles = {node.role for node in ctx.spec.nodes.values()}
    with EdgeClient(ctx.topology, _names(ctx)) as edge:
        attack = Attack(ctx, edge)
        if watch is not None:
            try:
                watch.start()
            except LabError as exc:
                alert_errors.append(f"no detection: {exc}")
                watch = None
        try:
            for s in scenarios:
                t0 = time.time()
                if s.needs is not None and s.needs not in roles:
                    outcomes.append(Outcome(s, None, t0, t0, f"the lab has no {s.needs} node"))
                    continue
                if progress:
                    progress(f"{s.id}: {s.title} (from {s.position})")
                try:
                    finding = s.run(attack)
                    outcomes.append(Outcome(s, finding, t0, time.time()))
                except LabError as exc:
                    outcomes.append(Outcome(s, None, t0, time.time(), str(exc)))
            if watch is not None:
                deadline = time.time() + detect_timeout
                if progress:
                    progress(f"waiting up to {detect_timeout:.0f} s for the alerts")
                while time.time() < deadline:
                    _attribute(outcomes, watch, started)
                    if all(o.detected or not o.scenario.alerts or not o.finding for o in outcomes):
                        break
                    time.sleep(5)
                _attribute(outcomes, watch, started)
        finally:
            if watch is not None:
                watch.stop()
    finished = time.time()
    rows = [o.as_dict() for o in outcomes]
    report: dict[str, Any] = {
        "lab": ctx.spec.lab.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(finished - started, 1),
        "edge_client": edge.address,
        "scenarios": rows,
        "alerts_seen": sorted(
            (a.as_dict() for a in (watch.seen.values() if watch else [])),
            key=lambda d: d["starts_at"],
        ),
        "alert_errors": alert_errors + (watch.errors if watch else []),
        "alerts_before": [a.as_dict() for a in watch.active_before(started)] if watch else [],
    }
    report["summary"] = {
        "scenarios": len(outcomes),
        "blocked": sum(o.blocked for o in outcomes),
        "detected": sum(o.detected for o in outcomes),
        "missed": sum(not o.blocked for o in outcomes),
    }
    report["matrix"] = matrix(rows)
    return report


def _attribute(outcomes: list[Outcome], watch: AlertWatch, attack_start: float) -> None:
    for o in outcomes:
        if o.detections or o.finding is None:
            continue
        _detect(o, watch, attack_start)
    by_alert: dict[tuple[str, float], list[str]] = {}
    for o in outcomes:
        for d in o.detections:
            by_alert.setdefault((d["alert"], d["starts_at"]), []).append(o.scenario.id)
    for o in outcomes:
        for d in o.detections:
            ids = by_alert[(d["alert"], d["starts_at"])]
            d["shared_with"] = [i for i in ids if i != o.scenario.id]


def _names(ctx: Context) -> Any:
    from pathlib import Path

    from mlseclab.targets.local.names import LocalNames

    return LocalNames(ctx.spec.lab.name, Path(ctx.spec.lab.local.datasets_root))


RANK = {"missed": 0, "blocked": 1, "blocked, detected": 2}


def matrix(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ATLAS tactic, each technique with the worst verdict of the scenarios using it."""
    out = []
    for tactic, techniques in TACTICS:
        cells = []
        for t in techniques:
            used = [s for s in scenarios if t in s["atlas"]]
            verdict = min((s["verdict"] for s in used), key=RANK.__getitem__) if used else ""
            cells.append({"technique": t, "verdict": verdict, "scenarios": [s["id"] for s in used]})
        out.append({"tactic": tactic, "techniques": cells})
    return out
