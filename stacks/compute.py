"""One VM per lab node: a full clone of the cloud-init template, fixed VM id, hardened layout.

Per node: ``VmLegacy`` with an explicit ``vm_id``; q35 + OVMF + EFI disk; NICs
on the lab bridge (or SDN vnets) with the Proxmox firewall on; cloud-init
static addresses (the segment gateway only on the service NIC), the lab's SSH
key and DNS; separate disks for /var, /var/log, /var/log/audit and /tmp
(identified by serial, partitioned by the base role); a GPU only through a PCI
resource mapping; datasets through virtiofs directory mappings, read-only ones
through the read-only view of the dataset.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from mlseclab.spec import LabSpec, Purpose
from mlseclab.topology import Interface, Topology
from stacks import provider
from stacks.ignored import ignored_properties
from stacks.network import Attachment, proxmox_settings
from stacks.settings import StackSettings

CPU_TYPE = "x86-64-v2-AES"  # the default qemu64 lacks AES-NI and x86-64-v2
CLONE_RETRIES = 3  # parallel clones race on storage locks (bpg#995, #1521)
#: mount point -> (disk serial, size in GiB). The base role partitions them by serial.
DATA_DISKS: tuple[tuple[str, str, int], ...] = (
    ("/var", "mlsl-var", 8),
    ("/var/log", "mlsl-varlog", 4),
    ("/var/log/audit", "mlsl-audit", 2),
    ("/tmp", "mlsl-tmp", 2),  # noqa: S108 - a mount point in the guest, not a temp file here
)
AUTO_VM_ID_BASE = 100_000
#: The provider's own timeouts, in seconds. bpg's VM resource declares no Pulumi/Terraform
#: ``Timeouts``, so ``CustomTimeouts`` on it are ignored; these arguments are what it reads.
VM_TIMEOUTS: dict[str, int] = {
    "timeout_clone": 1800,  # full clones of a large template, with parallel clones queued
    "timeout_create": 1800,
    "timeout_migrate": 1800,  # a clone moved to its node when storage is not shared
    "timeout_start_vm": 600,
    "timeout_reboot": 900,  # hardware changes during up reboot the VM
    "timeout_shutdown_vm": 900,  # down: 15 minutes to shut down, then stop
    "timeout_stop_vm": 300,
}


# -- pure derivations -----------------------------------------------------------------
def vm_ids(spec: LabSpec) -> dict[str, int]:
    """Every node's VM id: the spec's, else a stable one from the lab and node names.

    Ids depend only on names (never on order or count), so adding a node does not
    renumber the others. Explicit ``vm_id`` in the spec is still the advice:
    automatic ids from the cluster race (bpg#1610).
    """
    taken = {n.vm_id for n in spec.nodes.values() if n.vm_id is not None}
    base = AUTO_VM_ID_BASE + (zlib.crc32(spec.lab.name.encode()) % 8000) * 100
    out: dict[str, int] = {}
    for name in sorted(spec.nodes):
        node = spec.nodes[name]
        if node.vm_id is not None:
            out[name] = node.vm_id
            continue
        candidate = base + zlib.crc32(name.encode()) % 100
        while candidate in taken:
            candidate += 1
        taken.add(candidate)
        out[name] = candidate
    return out


def placement(spec: LabSpec) -> dict[str, str]:
    """The Proxmox node each lab node runs on: stable per name, spread over the nodes."""
    nodes = proxmox_settings(spec).nodes
    return {name: nodes[zlib.crc32(name.encode()) % len(nodes)] for name in spec.nodes}


def ordered_interfaces(topology: Topology, node: str) -> tuple[Interface, ...]:
    """NICs in VM order: mgmt first (net0), then the service NICs in spec order."""
    ifaces = topology.nodes[node].interfaces
    return tuple(sorted(ifaces, key=lambda i: (i.purpose is not Purpose.MGMT, i.index)))


def ip_configs(topology: Topology, node: str) -> list[dict[str, Any]]:
    """Static addresses; the default gateway only on the (first) service NIC.

    A node without a service NIC routes through its mgmt gateway, as topology does.
    """
    lab_node = topology.nodes[node]
    primary = lab_node.service[0] if lab_node.service else lab_node.mgmt
    out = []
    for iface in ordered_interfaces(topology, node):
        ipv4: dict[str, Any] = {"address": iface.cidr}
        if iface == primary:
            ipv4["gateway"] = iface.gateway
        out.append({"ipv4": ipv4})
    return out


def dir_mapping_name(lab: str, dataset: str, mode: str) -> str:
    return f"{lab}-{dataset}" + ("-ro" if mode == "ro" else "")


def dataset_path(settings: StackSettings, lab: str, dataset: str, mode: str) -> str:
    view = "ro" if mode == "ro" else "datasets"
    return f"{settings.datasets_root.rstrip('/')}/{lab}/{view}/{dataset}"


def vm_tags(spec: LabSpec, node: str) -> list[str]:
    n = spec.nodes[node]
    tags = {"mlseclab", f"lab-{spec.lab.name}", f"role-{n.role.value}", *n.tags}
    if n.gpu is not None:
        tags.add("gpu")
    return sorted(tags)


def description(
    spec: LabSpec, topology: Topology, node: str, attachments: dict[str, Attachment]
) -> pulumi.Output[str]:
    """Human note plus one machine-readable line the policy pack reads."""
    px = proxmox_settings(spec)
    mgmt = topology.nodes[node].mgmt
    att = attachments[mgmt.network]
    return pulumi.Output.from_input(att.bridge).apply(
        lambda bridge: (
            f"Managed by mlseclab (lab {spec.lab.name}, role {topology.nodes[node].role}); "
            "manual changes are reverted.\n"
            f"mlseclab: lab={spec.lab.name} role={topology.nodes[node].role} "
            f"mgmt-net={bridge}/{att.vlan_id if att.vlan_id is not None else '-'} "
            f"host-mgmt-bridge={px.mgmt_bridge}"
        )
    )


# -- components -----------------------------------------------------------------------
@dataclass
class DatasetMappingsArgs:
    spec: LabSpec
    settings: StackSettings


class DatasetMappings(pulumi.ComponentResource):
    """Directory mappings for the datasets the nodes mount, one per dataset and access mode.

    A read-only mount gets the ``-ro`` mapping, whose host path is the read-only bind
    mount of the dataset: virtiofsd cannot write there whatever the guest does.
    Mappings of protected datasets are ``protect``ed: ``mlseclab down`` keeps them.
    """

    names: dict[tuple[str, str], str]

    def __init__(
        self, name: str, args: DatasetMappingsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlseclab:compute:DatasetMappings", name, None, opts)
        spec, px = args.spec, proxmox_settings(args.spec)
        lab = spec.lab.name
        self.names = {}
        self.resources: list[pulumi.Resource] = []
        used = sorted({(m.dataset, m.mode) for n in spec.nodes.values() for m in n.mounts})
        for dataset, mode in used:
            protect = spec.datasets[dataset].protect
            mapping = dir_mapping_name(lab, dataset, mode)
            path = dataset_path(args.settings, lab, dataset, mode)
            self.resources.append(
                provider.dir_mapping(
                    f"{name}-{dataset}-{mode}",
                    mapping_name=mapping,
                    comment=(
                        f"mlseclab lab={lab} dataset={dataset} mode={mode} "
                        f"protect={'true' if protect else 'false'}"
                    ),
                    maps=[{"node": pve_node, "path": path} for pve_node in px.nodes],
                    opts=pulumi.ResourceOptions(parent=self, protect=protect),
                )
            )
            self.names[(dataset, mode)] = mapping
        self.register_outputs({"mappings": sorted(self.names.values())})


@dataclass
class LabVmArgs:
    spec: LabSpec
    topology: Topology
    settings: StackSettings
    node: str
    vm_id: int
    pve_node: str
    template: pulumi.Input[dict[str, Any]]  # {"node_name": ..., "vm_id": ...}
    attachments: dict[str, Attachment]
    mappings: dict[tuple[str, str], str]
    pool_id: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


def vm_props(args: LabVmArgs) -> dict[str, Any]:
    """Every VmLegacy argument for one node (pure apart from the template lookup)."""
    spec, topo, node = args.spec, args.topology, args.node
    px = proxmox_settings(spec)
    n = spec.nodes[node]
    ifaces = ordered_interfaces(topo, node)
    mgmt_gw = str(spec.networks[spec.mgmt_segment_name()].gateway_address)
    nics = []
    for iface in ifaces:
        att = args.attachments[iface.network]
        nic: dict[str, Any] = {"bridge": att.bridge, "model": "virtio", "firewall": True}
        if att.vlan_id is not None:
            nic["vlan_id"] = att.vlan_id
        mac = n.nics[iface.index].mac
        if mac is not None:
            nic["mac_address"] = mac
        nics.append(nic)
    disks = [
        {
            "interface": "scsi0",
            "datastore_id": px.datastore,
            "size": n.disk,
            "iothread": True,
            "discard": "on",
            "ssd": True,
            "file_format": "raw",
        }
    ]
    for i, (_mount, serial, size) in enumerate(DATA_DISKS, start=1):
        disks.append(
            {
                "interface": f"scsi{i}",
                "datastore_id": px.datastore,
                "size": size,
                "iothread": True,
                "discard": "on",
                "ssd": True,
                "file_format": "raw",
                "serial": serial,
            }
        )
    template = pulumi.Output.from_input(args.template)
    props: dict[str, Any] = {
        "name": node,
        "node_name": args.pve_node,
        "vm_id": args.vm_id,
        "description": description(spec, topo, node, args.attachments),
        "tags": vm_tags(spec, node),
        "pool_id": args.pool_id,
        "clone": {
            "vm_id": template.apply(lambda t: int(t["vm_id"])),
            "node_name": template.apply(lambda t: str(t["node_name"])),
            "full": True,
            "datastore_id": px.datastore,
            "retries": CLONE_RETRIES,
        },
        "machine": "q35",
        "bios": "ovmf",
        # Secure Boot keys enrolled, except with a GPU: out-of-tree GPU drivers are unsigned.
        "efi_disk": {
            "datastore_id": px.datastore,
            "file_format": "raw",
            "type": "4m",
            "pre_enrolled_keys": n.gpu is None,
        },
        "operating_system": {"type": "l26"},
        "cpu": {"cores": n.cpu, "sockets": 1, "type": CPU_TYPE},
        # No ballooning: passthrough pins all guest memory, and the others get what they declare.
        "memory": {"dedicated": n.memory, "floating": 0},
        "scsi_hardware": "virtio-scsi-single",
        "disks": disks,
        "network_devices": nics,
        "initialization": {
            "datastore_id": px.datastore,
            # ciupgrade 0: the lab has no egress, so a first-boot apt upgrade only fails or
            # races Ansible's apt tasks; packages come from the template and the roles.
            "upgrade": False,
            "ip_configs": ip_configs(topo, node),
            "user_account": {"username": "mlseclab", "keys": [args.settings.ssh_public_key]},
            "dns": {
                "domain": spec.lab.domain,
                "servers": list(args.settings.dns_servers or (mgmt_gw,)),
            },
        },
        # Without the agent in the image, create and refresh wait for it until timeout (bpg#449).
        "agent": {"enabled": args.settings.template_agent, "trim": args.settings.template_agent},
        "on_boot": True,
        "started": True,
        "stop_on_destroy": not args.settings.template_agent,
        "protection": False,
        **VM_TIMEOUTS,
    }
    if n.gpu is not None:
        props["hostpcis"] = [
            {"device": f"hostpci{i}", "mapping": n.gpu.mapping, "pcie": n.gpu.pcie}
            for i in range(n.gpu.count)
        ]
    if n.mounts:
        props["virtiofs"] = [
            {
                "mapping": args.mappings[(m.dataset, m.mode)],
                "cache": "auto",
                "direct_io": False,
                "expose_acl": False,
                "expose_xattr": False,
            }
            for m in n.mounts
        ]
    return props


class LabVm(pulumi.ComponentResource):
    """One lab node as a Proxmox VM."""

    vm: pulumi.CustomResource

    def __init__(
        self, name: str, args: LabVmArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlseclab:compute:LabVm", name, None, opts)
        self.vm = provider.vm(
            f"{name}-vm",
            vm_props(args),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                ignore_changes=ignored_properties("VmLegacy"),
            ),
        )
        self.register_outputs({"vmId": args.vm_id})
