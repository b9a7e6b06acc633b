"""Targets turn a spec into reachable nodes: ``local`` (one Linux host) and ``proxmox``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlseclab.errors import TargetError

if TYPE_CHECKING:
    from mlseclab.drift import DriftFinding
    from mlseclab.spec import LabSpec
    from mlseclab.state import LabHome
    from mlseclab.targets.local.snapshots import Snapshot, SnapshotStore
    from mlseclab.topology import LabNode, Topology


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


def local_only(command: str) -> TargetError:
    """The error of a command the Proxmox target does not have yet."""
    return TargetError(
        f"`mlseclab {command}` works on the local target only for now; on Proxmox the "
        "datasets are ZFS datasets of the pve_host role, which is not written yet"
    )


class Target(Protocol):
    """What the commands and :mod:`mlseclab.lifecycle` need from where a lab runs."""

    kind: str  # local | proxmox: what up records in state.json
    runtime_kind: str  # container | vm: the inventory's mlseclab_kind
    changes: list[str]  # what the last up or down changed, one line each
    rebuilds: bool  # whether destroy_nodes (and so a rebuild) is supported

    @property
    def snapshots(self) -> SnapshotStore | None:
        """The datasets' snapshots; None where the target keeps none."""
        ...

    def plan(self, *, offline: bool = False) -> Plan:
        """What up would do; ``offline``: without contacting a cluster (Proxmox: the program
        under mocks). Where a cluster is configured, failing to reach it is an error."""
        ...

    def up(self) -> None: ...

    def down(self, *, purge_data: bool, purge_snapshots: bool, force: bool) -> None: ...

    def status(self) -> list[NodeStatus]: ...

    def infrastructure_drift(self, nodes: Sequence[str] | None) -> list[DriftFinding]: ...

    def destroy_nodes(self, nodes: Sequence[str]) -> None:
        """Stop ``nodes`` and remove them, datasets kept (the first half of a rebuild)."""
        ...

    def quarantine_models(self) -> list[str]:
        """Move model files that differ from their pin out of the datasets."""
        ...

    def restore_dataset(
        self, dataset: str, snapshot_id: str
    ) -> tuple[Snapshot, Snapshot | None]: ...


def open_target(
    spec: LabSpec, spec_path: Path, topology: Topology, home: LabHome, kind: str
) -> Target:
    """The target ``kind`` (local or proxmox) for this lab."""
    if kind == "local":
        from mlseclab.targets.local.target import LocalTarget

        return LocalTarget(spec, topology, home, spec_path)
    from mlseclab.targets.proxmox.target import ProxmoxTarget

    return ProxmoxTarget(spec, spec_path, topology, home)
