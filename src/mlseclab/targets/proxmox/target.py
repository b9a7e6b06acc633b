"""The ``proxmox`` target as the commands see it (the Target protocol).

The engine (``engine.py``) speaks Pulumi; this class turns its plan into the
CLI's table, writes the same inventory and ssh_config the local target writes,
and falls back to the offline plan (the program under mocks, ``offline.py``)
when the engine cannot run here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlseclab import ui
from mlseclab.drift import INFRASTRUCTURE, DriftFinding
from mlseclab.errors import LabError, TargetError
from mlseclab.harden import ROLE_VARS
from mlseclab.inventory import write_inventory
from mlseclab.process import run
from mlseclab.secrets import ensure_secrets
from mlseclab.state import write_private
from mlseclab.targets import NodeStatus, Plan, PlannedAction, local_only
from mlseclab.targets.proxmox.engine import PulumiEngine
from mlseclab.targets.proxmox.offline import plan_offline

if TYPE_CHECKING:
    from mlseclab.spec import LabSpec
    from mlseclab.state import LabHome
    from mlseclab.targets.local.snapshots import Snapshot, SnapshotStore
    from mlseclab.topology import Topology

RUNTIME_KIND = "vm"


class ProxmoxTarget:
    kind = "proxmox"
    runtime_kind = RUNTIME_KIND
    rebuilds = False  # destroy_nodes is not written for Proxmox yet
    snapshots: SnapshotStore | None = None  # ZFS snapshots on the hypervisors, not here

    def __init__(self, spec: LabSpec, spec_path: Path, topology: Topology, home: LabHome) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.topology = topology
        self.home = home
        self.changes: list[str] = []

    def _driver(self) -> PulumiEngine:
        """The engine for this lab; Pulumi itself is imported only when the engine runs."""
        return PulumiEngine(self.spec, self.spec_path, self.home.root)

    def plan(self, *, offline: bool = False) -> Plan:
        """``pulumi preview`` against the cluster; with ``offline``, the program under mocks.

        A preflight failure is an error, never a silent fallback to the offline plan: CI
        must be able to tell "cluster unreachable" from "no changes".
        """
        if offline:
            resources = [
                PlannedAction(
                    "create", r.type.split(":")[-1] if ":" in r.type else r.type, r.name, r.summary
                )
                for r in plan_offline(self.spec, self.spec_path)
            ]
            return Plan(
                resources=resources,
                offline=True,
                note="offline (--offline): every resource as if none existed; no cluster contacted",
            )
        driver = self._driver()
        try:
            driver.preflight()
        except TargetError as exc:
            line = exc.lines[0]
            if "--offline" not in line:
                line += " (plan without a cluster: mlseclab plan --target proxmox --offline)"
            raise TargetError(line) from None
        result = driver.plan()
        resources = [PlannedAction("change", "step", step) for step in result.steps]
        summary = ", ".join(f"{n} to {op}" for op, n in sorted(result.changes.items()))
        return Plan(resources=resources, note=f"pulumi preview: {summary or 'no changes'}")

    def up(self) -> None:
        driver = self._driver()
        driver.preflight()
        with self.home.lock("up"):
            state = self.home.read_state()
            # recorded before anything is made: every later command acts on this target
            state.update({"lab": self.spec.lab.name, "target": "proxmox", "phase": "up"})
            self.home.write_state(state)
            outputs = driver.up(on_event=lambda line: ui.plain(f"  {line}"))
            state = self.home.read_state()
            state.update(
                {
                    "lab": self.spec.lab.name,
                    "target": "proxmox",
                    "phase": "ready",
                    "finished": time.time(),
                    "nodes": {
                        n: {"mgmt_ip": o.mgmt_ip, "vm_id": o.vm_id} for n, o in outputs.items()
                    },
                }
            )
            self.home.write_state(state)
            for name, out in outputs.items():
                expected = self.topology.nodes[name].mgmt.ip
                if out.mgmt_ip != expected:
                    raise TargetError(
                        f"{name} came up with mgmt address {out.mgmt_ip}, "
                        f"the spec says {expected}; check the template's cloud-init"
                    )
            self.home.ensure_ssh_key()
            write_inventory(self.topology, self.home, RUNTIME_KIND, "proxmox")
            self._scan_host_keys()
            self.changes = [f"vm {n}" for n in outputs]
            for item in ensure_secrets(self.topology, self.home):
                ui.info(f"  [green]+[/] secret: {ui.esc(item)}")
                self.changes.append(item)
            state[ROLE_VARS] = {}  # the roles read nothing from this machine on Proxmox
            self.home.write_state(state)

    def _scan_host_keys(self) -> None:
        """First contact over the management network: record each VM's host key."""
        lines = []
        for node in self.topology.nodes.values():
            proc = run(["ssh-keyscan", "-T", "5", "-t", "ed25519", node.mgmt.ip], check=False)
            for line in proc.stdout.splitlines():
                if line and not line.startswith("#"):
                    lines.append(f"{node.name} {line.split(' ', 1)[1]}")
        if lines:
            write_private(self.home.known_hosts, "\n".join(lines) + "\n", 0o644)

    def down(self, *, purge_data: bool, purge_snapshots: bool = False, force: bool) -> None:
        if purge_snapshots:
            raise LabError(
                "--purge-snapshots is for the local target (Proxmox keeps ZFS snapshots); "
                "leave it out and destroy those on the hypervisors deliberately"
            )
        driver = self._driver()
        driver.preflight()
        if purge_data:
            ui.warn(
                "--purge-data: ZFS datasets on the hypervisors belong to the pve_host role "
                "and are not destroyed by down; destroy them there deliberately"
            )
        with self.home.lock("down"):
            driver.down()
            self.home.forget()

    def status(self) -> list[NodeStatus]:
        recorded = self.home.read_state().get("nodes", {})
        return [
            NodeStatus.of(n, RUNTIME_KIND, "provisioned", f"vm_id {recorded[n.name]['vm_id']}")
            if n.name in recorded
            else NodeStatus.of(n, RUNTIME_KIND, "absent")
            for n in self.topology.nodes.values()
        ]

    def infrastructure_drift(self, nodes: Sequence[str] | None) -> list[DriftFinding]:
        """What differs on the cluster from what the stack declares (pulumi preview)."""
        return [
            DriftFinding(
                layer=INFRASTRUCTURE,
                node=i.resource,
                what=i.type,
                expected="as the stack declares it",
                found="changed on the cluster",
                detail=i.diff,
            )
            for i in self._driver().drift()
        ]

    def destroy_nodes(self, nodes: Sequence[str]) -> None:
        raise local_only("rebuild")

    def quarantine_models(self) -> list[str]:
        return []  # the models live in the hypervisors' datasets (pve_host role)

    def restore_dataset(self, dataset: str, snapshot_id: str) -> tuple[Snapshot, Snapshot | None]:
        raise local_only("restore")
