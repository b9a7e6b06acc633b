"""Stack output keys: the contract between the Pulumi program and mlseclab.

The driver (``mlseclab.targets.proxmox.engine``) reads these keys to write the same
inventory the local target writes; tests import them too. Only ids, addresses
and names are exported, plus the lab token as a Pulumi secret (encrypted in the
state, never printed by mlseclab).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from mlseclab.spec import OPERATOR_USER

#: ``{node name: {MGMT_IP: "10.66.10.12", VM_ID: 6612, PVE_NODE: "pve-01", ...}}``
NODES = "nodes"
MGMT_IP = "mgmtIp"
VM_ID = "vmId"
PVE_NODE = "pveNode"
ROLE = "role"
GPU = "gpu"
#: ``[{"tag": virtiofs tag, "path": mount point, "mode": "ro"|"rw"}]``: the guest mounts these
MOUNTS = "mounts"
#: ``{"/var": "mlsl-var", ...}``: disk serial per mount point, for the base role to partition
DATA_DISKS = "dataDisks"

ADMIN_USER = "adminUser"
POOL = "pool"
NETWORK_MODE = "networkMode"
AUTOMATION_TOKEN_ID = "automationTokenId"  # noqa: S105 - an output key
AUTOMATION_TOKEN = "automationToken"  # noqa: S105 - an output key (its value is secret)

#: The cloud-init user that carries the lab's SSH key (Ansible connects as it).
CLOUD_INIT_USER = OPERATOR_USER


@dataclass
class NodeOutputs:
    mgmt_ip: str
    vm_id: pulumi.Input[int]
    pve_node: str
    role: str
    gpu: bool
    mounts: list[dict[str, str]] = field(default_factory=list)
    data_disks: dict[str, str] = field(default_factory=dict)

    def export(self) -> dict[str, object]:
        return {
            MGMT_IP: self.mgmt_ip,
            VM_ID: self.vm_id,
            PVE_NODE: self.pve_node,
            ROLE: self.role,
            GPU: self.gpu,
            MOUNTS: self.mounts,
            DATA_DISKS: self.data_disks,
        }


@dataclass
class LabOutputs:
    nodes: dict[str, NodeOutputs]
    pool: str
    network_mode: str
    automation_token_id: pulumi.Input[str] | None = None
    automation_token: pulumi.Output[str] | None = None

    def export(self) -> None:
        """Export every key (call from ``__main__`` only)."""
        pulumi.export(NODES, {name: n.export() for name, n in self.nodes.items()})
        pulumi.export(ADMIN_USER, CLOUD_INIT_USER)
        pulumi.export(POOL, self.pool)
        pulumi.export(NETWORK_MODE, self.network_mode)
        if self.automation_token_id is not None:
            pulumi.export(AUTOMATION_TOKEN_ID, self.automation_token_id)
        if self.automation_token is not None:
            pulumi.export(AUTOMATION_TOKEN, pulumi.Output.secret(self.automation_token))
