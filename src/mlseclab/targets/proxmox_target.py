"""Adapter from the CLI's target interface to the Proxmox driver (targets/proxmox.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlseclab.errors import TargetError
from mlseclab.targets import NodeStatus, Plan

if TYPE_CHECKING:
    from mlseclab.commands.common import Context


class ProxmoxAdapter:
    runtime_kind = "vm"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def plan(self) -> Plan:
        raise TargetError("the proxmox target is not available yet")

    def up(self) -> None:
        raise TargetError("the proxmox target is not available yet")

    def down(self, *, purge_data: bool, force: bool) -> None:
        raise TargetError("the proxmox target is not available yet")

    def status(self) -> list[NodeStatus]:
        raise TargetError("the proxmox target is not available yet")
