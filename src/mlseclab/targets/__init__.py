"""Targets turn a spec into reachable nodes: ``local`` (one Linux host) and ``proxmox``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mlseclab.commands.common import Context
    from mlseclab.topology import LabNode


@dataclass(frozen=True)
class PlannedAction:
    """One thing ``up`` would do, as the plan shows it."""

    action: str  # create | exists | replace | delete
    kind: str
    name: str
    details: str = ""


@dataclass(frozen=True)
class Plan:
    resources: list[PlannedAction] = field(default_factory=list)
    offline: bool = False
    note: str = ""


@dataclass(frozen=True)
class NodeStatus:
    name: str
    role: str
    kind: str
    segments: str
    mgmt_ip: str
    state: str  # running | stopped | absent | unknown
    detail: str = ""

    @classmethod
    def of(cls, node: LabNode, kind: str, state: str, detail: str = "") -> NodeStatus:
        """The row for one lab node: name, role and addresses from the topology."""
        return cls(
            name=node.name,
            role=node.role,
            kind=kind,
            segments=", ".join(f"{i.network} {i.ip}" for i in node.interfaces),
            mgmt_ip=node.mgmt.ip,
            state=state,
            detail=detail,
        )


class Target(Protocol):
    runtime_kind: str

    def plan(self) -> Plan: ...

    def up(self) -> None: ...

    def down(self, *, purge_data: bool, force: bool) -> None: ...

    def status(self) -> list[NodeStatus]: ...


def open_target(ctx: Context) -> Target:
    if ctx.target == "local":
        from mlseclab.targets.local.target import LocalTarget

        return LocalTarget(ctx.spec, ctx.topology, ctx.home)
    from mlseclab.targets.proxmox.target import ProxmoxTarget

    return ProxmoxTarget(ctx)
