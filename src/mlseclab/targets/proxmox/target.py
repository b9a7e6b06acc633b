"""The ``proxmox`` target as the commands see it (the Target protocol).

The engine (``engine.py``) speaks Pulumi; this class turns its plan into the
CLI's table, writes the same inventory and ssh_config the local target writes,
and falls back to the offline plan (the program under mocks, ``offline.py``)
when the engine cannot run here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mlseclab import ui
from mlseclab.errors import TargetError
from mlseclab.inventory import write_inventory
from mlseclab.state import write_private
from mlseclab.targets import NodeStatus, Plan, PlannedAction
from mlseclab.targets.local.host import run
from mlseclab.targets.proxmox.engine import PulumiEngine
from mlseclab.targets.proxmox.offline import plan_offline

if TYPE_CHECKING:
    from mlseclab.commands.common import Context

RUNTIME_KIND = "vm"


class ProxmoxTarget:
    runtime_kind = RUNTIME_KIND

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.changes: list[str] = []

    def _driver(self) -> PulumiEngine:
        """The engine for this lab; Pulumi itself is imported only when the engine runs."""
        return PulumiEngine(self.ctx.spec, self.ctx.spec_path, self.ctx.home.root)

    def plan(self) -> Plan:
        driver = self._driver()
        try:
            driver.preflight()
        except TargetError as exc:
            resources = [
                PlannedAction(
                    "create", r.type.split(":")[-1] if ":" in r.type else r.type, r.name, r.summary
                )
                for r in plan_offline(self.ctx.spec, self.ctx.spec_path)
            ]
            return Plan(resources=resources, offline=True, note=f"offline because: {exc.lines[0]}")
        result = driver.plan()
        resources = [PlannedAction("change", "step", step) for step in result.steps]
        summary = ", ".join(f"{n} to {op}" for op, n in sorted(result.changes.items()))
        return Plan(resources=resources, note=f"pulumi preview: {summary or 'no changes'}")

    def up(self) -> None:
        driver = self._driver()
        driver.preflight()
        with self.ctx.home.lock("up"):
            outputs = driver.up(on_event=lambda line: ui.plain(f"  {line}"))
            state = self.ctx.home.read_state()
            state.update(
                {
                    "lab": self.ctx.spec.lab.name,
                    "target": "proxmox",
                    "phase": "ready",
                    "finished": time.time(),
                    "nodes": {
                        n: {"mgmt_ip": o.mgmt_ip, "vm_id": o.vm_id} for n, o in outputs.items()
                    },
                }
            )
            self.ctx.home.write_state(state)
            for name, out in outputs.items():
                expected = self.ctx.topology.nodes[name].mgmt.ip
                if out.mgmt_ip != expected:
                    raise TargetError(
                        f"{name} came up with mgmt address {out.mgmt_ip}, "
                        f"the spec says {expected}; check the template's cloud-init"
                    )
            self.ctx.home.ensure_ssh_key()
            write_inventory(self.ctx.topology, self.ctx.home, RUNTIME_KIND)
            self._scan_host_keys()
            self.changes = [f"vm {n}" for n in outputs]

    def _scan_host_keys(self) -> None:
        """First contact over the management network: record each VM's host key."""
        lines = []
        for node in self.ctx.topology.nodes.values():
            proc = run(["ssh-keyscan", "-T", "5", "-t", "ed25519", node.mgmt.ip], check=False)
            for line in proc.stdout.splitlines():
                if line and not line.startswith("#"):
                    lines.append(f"{node.name} {line.split(' ', 1)[1]}")
        if lines:
            write_private(self.ctx.home.known_hosts, "\n".join(lines) + "\n", 0o644)

    def down(self, *, purge_data: bool, force: bool) -> None:
        driver = self._driver()
        driver.preflight()
        if purge_data:
            ui.warn(
                "--purge-data: ZFS datasets on the hypervisors belong to the pve_host role "
                "and are not destroyed by down; destroy them there deliberately"
            )
        with self.ctx.home.lock("down"):
            driver.down()
            for f in (
                self.ctx.home.state_file,
                self.ctx.home.inventory,
                self.ctx.home.ssh_config,
                self.ctx.home.known_hosts,
            ):
                f.unlink(missing_ok=True)

    def status(self) -> list[NodeStatus]:
        recorded = self.ctx.home.read_state().get("nodes", {})
        return [
            NodeStatus.of(n, RUNTIME_KIND, "provisioned", f"vm_id {recorded[n.name]['vm_id']}")
            if n.name in recorded
            else NodeStatus.of(n, RUNTIME_KIND, "absent")
            for n in self.ctx.topology.nodes.values()
        ]
