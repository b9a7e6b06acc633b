"""Drift: how the live lab differs from its spec, in three layers.

- infrastructure: what the target runs (the local target's namespaces, bridges,
  containers, mounts and router policy; on Proxmox the Pulumi refresh preview);
- configuration: what the roles would change (site.yml in check mode with diffs);
- posture: the verify suite's failing checks.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlseclab.harden import HardenResult, TaskResult
from mlseclab.posture.results import CheckResult

INFRASTRUCTURE = "infrastructure"
CONFIGURATION = "configuration"
POSTURE = "posture"
LAYERS = (INFRASTRUCTURE, CONFIGURATION, POSTURE)


@dataclass(frozen=True)
class DriftFinding:
    layer: str
    node: str
    what: str  # the resource, task or check that drifted
    expected: str
    found: str
    detail: str = ""  # a diff or the check's evidence
    controls: tuple[str, ...] = ()


@dataclass
class DriftReport:
    lab: str
    started: str
    findings: list[DriftFinding] = field(default_factory=list)
    layers_run: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a layer that could not be read
    seconds: dict[str, float] = field(default_factory=dict)
    posture: dict[str, Any] | None = None  # the verify run, as report.json has it

    @property
    def drifted(self) -> bool:
        return bool(self.findings)

    def by_layer(self) -> dict[str, list[DriftFinding]]:
        return {layer: [f for f in self.findings if f.layer == layer] for layer in LAYERS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "started": self.started,
            "drift": self.drifted,
            "layers_run": self.layers_run,
            "errors": self.errors,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "findings": [asdict(f) for f in self.findings],
            "counts": {layer: len(fs) for layer, fs in self.by_layer().items()},
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=1) + "\n", encoding="utf-8")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def render_diff(diffs: list[dict[str, Any]]) -> str:
    """Ansible's --diff entries as one unified diff (file content or attributes)."""
    out: list[str] = []
    for d in diffs:
        if "prepared" in d:
            out.append(str(d["prepared"]))
            continue
        if "before" not in d and "after" not in d:
            continue
        before, after = _text(d.get("before", "")), _text(d.get("after", ""))
        if before == after:
            continue
        out += difflib.unified_diff(
            before.splitlines(),
            after.splitlines(),
            str(d.get("before_header", "live")),
            str(d.get("after_header", "wanted")),
            lineterm="",
            n=1,
        )
    return "\n".join(out)[:6000]


def _setting(r: TaskResult) -> str:
    for d in r.diff:
        header = d.get("after_header") or d.get("before_header")
        if header:
            return str(header)
    return ""


def configuration_findings(result: HardenResult) -> list[DriftFinding]:
    """Every task that check mode says would change, fail or not reach its node."""
    out: list[DriftFinding] = []
    for r in result.results:
        if r.status == "changed":
            setting = _setting(r)
            out.append(
                DriftFinding(
                    layer=CONFIGURATION,
                    node=r.host,
                    what=r.task,
                    expected="as the role sets it",
                    found=f"differs{f' ({setting})' if setting else ''}",
                    detail=render_diff(r.diff),
                    controls=_ids(r.task),
                )
            )
        elif r.status in ("failed", "unreachable"):
            out.append(
                DriftFinding(
                    layer=CONFIGURATION,
                    node=r.host,
                    what=r.task,
                    expected="the task runs",
                    found=r.status,
                    detail=r.message,
                    controls=_ids(r.task),
                )
            )
    return out


def _ids(task: str) -> tuple[str, ...]:
    """The control ids a task name carries after its `|`: `... | MLSL-OS-02, CIS 7.1.5`."""
    _, _, tail = task.partition("|")
    return tuple(p.strip() for p in tail.split(",") if p.strip().startswith("MLSL-"))


def posture_findings(results: list[CheckResult]) -> list[DriftFinding]:
    """Every check that fails (:data:`mlseclab.posture.results.FAILING`)."""
    return [
        DriftFinding(
            layer=POSTURE,
            node=r.node,
            what=r.check,
            expected=r.title,
            found=str(r.outcome),
            detail=r.evidence,
            controls=r.lab_controls,
        )
        for r in results
        if r.failing
    ]
