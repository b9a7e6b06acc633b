"""Apply a tamper to a running lab, run the checks it must break, and put it back."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlseclab.posture.plugin import LAB_SCOPE
from mlseclab.posture.runner import run_posture
from mlseclab.targets.local.names import LocalNames
from mlseclab.topology import Topology
from posture.tampers import Tamper


@dataclass
class TamperProof:
    tamper: str
    node: str
    outcomes: dict[str, str]  # check -> outcome while the tamper was applied
    applied: bool
    reverted: bool
    error: str = ""

    @property
    def proven(self) -> bool:
        return self.applied and self.reverted and all(o == "failed" for o in self.outcomes.values())


def _values(t: Tamper, topo: Topology, names: LocalNames) -> dict[str, str]:
    node = topo.nodes[t.node]
    return {
        "mgmt": node.mgmt.ip,
        "service": node.service[0].ip if node.service else node.mgmt.ip,
        "operator": topo.operator_address,
        "table": names.nft_table,
    }


def on_node(ssh_config: Path, node: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(ssh_config), node, "sudo sh -s"],
        input=command,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _on_router(names: LocalNames, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", names.router_ns, "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def apply(t: Tamper, topo: Topology, names: LocalNames, ssh_config: Path) -> str:
    """Apply ``t``; returns an error text, or "" when every step succeeded."""
    values = _values(t, topo, names)
    errors = []
    if t.apply:
        proc = on_node(ssh_config, t.node, t.apply.format(**values))
        if proc.returncode != 0:
            errors.append(f"apply on {t.node}: {proc.stderr.strip()[-400:]}")
    if t.router_apply:
        proc = _on_router(names, t.router_apply.format(**values))
        if proc.returncode != 0:
            errors.append(f"apply on the router: {proc.stderr.strip()[-400:]}")
    return "; ".join(errors)


def revert(t: Tamper, topo: Topology, names: LocalNames, ssh_config: Path) -> str:
    values = _values(t, topo, names)
    errors = []
    if t.router_revert:
        proc = _on_router(names, t.router_revert.format(**values))
        if proc.returncode != 0:
            errors.append(f"revert on the router: {proc.stderr.strip()[-400:]}")
    proc = on_node(ssh_config, t.node, t.revert.format(**values))
    if proc.returncode != 0:
        errors.append(f"revert on {t.node}: {proc.stderr.strip()[-400:]}")
    return "; ".join(errors)


def prove(
    t: Tamper,
    *,
    spec_path: Path,
    state: Path,
    topo: Topology,
    names: LocalNames,
    lab_scope_checks: set[str],
) -> TamperProof:
    """Apply, run the named checks on the tamper's node (and the lab scope), revert."""
    ssh_config = state / "ssh_config"
    proof = TamperProof(t.name, t.node, {}, applied=False, reverted=False)
    try:
        err = apply(t, topo, names, ssh_config)
        proof.applied = not err
        proof.error = err
        selection = " or ".join(sorted(set(t.breaks)))
        run = run_posture(
            lab=topo.spec.lab.name,
            spec_path=spec_path,
            state=state,
            nodes=[t.node],
            include_lab_scope=bool(set(t.breaks) & lab_scope_checks),
            extra=["-k", selection],
        )
        for check in t.breaks:
            wanted = LAB_SCOPE if check in lab_scope_checks else t.node
            got = [str(r.outcome) for r in run.results if r.check == check and r.node == wanted]
            proof.outcomes[check] = got[0] if got else "not run"
    finally:
        err = revert(t, topo, names, ssh_config)
        proof.reverted = not err
        if err:
            proof.error = f"{proof.error}; {err}".strip("; ")
    return proof
