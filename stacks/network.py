"""Lab segments on Proxmox: VLANs on a VLAN-aware lab bridge, or an SDN VLAN zone.

``lab.proxmox.network_mode`` chooses:

- ``bridge``: one VLAN-aware Linux bridge (``lab_bridge``) per Proxmox node,
  allowing only the lab's VLAN ids; each VM NIC carries its segment's VLAN tag.
- ``sdn``: one SDN VLAN zone on ``lab_bridge``, one vnet (tagged with the
  segment's VLAN) and one subnet per segment, then an ``Applier`` so that the
  pending SDN configuration takes effect; VM NICs attach to the vnet.

SDN zone and vnet ids are cluster-global, ``[a-zA-Z][a-zA-Z0-9]*[a-zA-Z0-9]`` and at
most 8 characters. The zone id is ``lab.proxmox.sdn_zone`` (2-4 characters) or one
derived from the lab name; a vnet id is the zone id plus the segment's VLAN id in 4
digits, so vnet ids of different zones never collide, and a second lab with the same
zone id is refused by Proxmox at the zone, before any vnet is made.

The management bridge (``mgmt_bridge``, vmbr0) is never touched: every change
to a node's networking reloads it and can cut access mid-run (bpg#3063).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pulumi

from mlseclab.spec import LabSpec, ProxmoxSettings
from stacks import provider
from stacks.settings import StackSettings


@dataclass(frozen=True)
class Attachment:
    """Where a NIC on a segment plugs in."""

    bridge: pulumi.Input[str]
    vlan_id: int | None  # None: the bridge (an SDN vnet) tags the traffic itself


@dataclass
class LabNetworkArgs:
    spec: LabSpec
    settings: StackSettings


#: Proxmox's format of SDN zone and vnet ids (pve-sdn-zone-id, pve-sdn-vnet-id), <= 8.
SDN_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9]*[a-zA-Z0-9]")
SDN_ID_MAX = 8
VLAN_DIGITS = 4  # VLAN ids go up to 4094
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def derived_zone_id(lab: str) -> str:
    """A 4-character zone id from the lab name: ``m`` and three base-36 digits of its hash."""
    n = int.from_bytes(hashlib.sha256(lab.encode()).digest()[:8], "big")
    digits = ""
    for _ in range(SDN_ID_MAX - VLAN_DIGITS - 1):
        n, r = divmod(n, 36)
        digits += _BASE36[r]
    return f"m{digits}"


def zone_id(spec: LabSpec) -> str:
    """The lab's SDN zone id: ``lab.proxmox.sdn_zone``, else derived from the lab name."""
    px = proxmox_settings(spec)
    return px.sdn_zone if px.sdn_zone is not None else derived_zone_id(spec.lab.name)


def vnet_id(zone: str, vlan: int) -> str:
    """The zone id and the VLAN id in 4 digits: at most 8 characters, unique on the cluster
    as long as the zone id is (Proxmox refuses a second zone with the same id)."""
    if len(zone) > SDN_ID_MAX - VLAN_DIGITS:
        raise ValueError(f"SDN zone id {zone!r} is longer than {SDN_ID_MAX - VLAN_DIGITS}")
    return f"{zone}{vlan:0{VLAN_DIGITS}d}"


def sdn_acl_path(spec: LabSpec) -> str:
    """Where Proxmox looks for SDN.Use when a NIC is attached, minus the last element:
    ``/sdn/zones/<zone>/<vnet>`` (sdn) or ``/sdn/zones/localnetwork/<bridge>/<vlan>``
    (bridge). A grant here must propagate to reach them."""
    px = proxmox_settings(spec)
    if px.network_mode == "sdn":
        return f"/sdn/zones/{zone_id(spec)}"
    return f"/sdn/zones/localnetwork/{px.lab_bridge}"


def sdn_use_paths(spec: LabSpec) -> list[str]:
    """Every path Proxmox checks SDN.Use on for the lab's NICs (one per segment)."""
    px = proxmox_settings(spec)
    base = sdn_acl_path(spec)
    vlans = sorted(seg.vlan for seg in spec.networks.values())
    if px.network_mode == "sdn":
        return [f"{base}/{vnet_id(zone_id(spec), v)}" for v in vlans]
    return [f"{base}/{v}" for v in vlans]


def proxmox_settings(spec: LabSpec) -> ProxmoxSettings:
    if spec.lab.proxmox is None:
        raise ValueError("the spec has no lab.proxmox section (endpoint, nodes, template)")
    px = spec.lab.proxmox
    if px.lab_bridge == px.mgmt_bridge:
        raise ValueError(
            f"lab.proxmox.lab_bridge is the management bridge ({px.mgmt_bridge}); "
            "give the lab its own VLAN-aware bridge, e.g. vmbr1"
        )
    return px


class LabNetwork(pulumi.ComponentResource):
    """The lab's segments; ``attachments[segment]`` tells a VM NIC where to plug in."""

    attachments: dict[str, Attachment]
    ready: list[pulumi.Resource]

    def __init__(
        self, name: str, args: LabNetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlseclab:network:LabNetwork", name, None, opts)
        spec, px = args.spec, proxmox_settings(args.spec)
        child = pulumi.ResourceOptions(parent=self)
        self.attachments = {}
        self.ready = []
        vids = " ".join(str(s.vlan) for s in sorted(spec.networks.values(), key=lambda s: s.vlan))
        if px.network_mode == "bridge":
            if args.settings.manage_bridge:
                for pve_node in px.nodes:
                    self.ready.append(
                        provider.bridge(
                            f"{name}-bridge-{pve_node}",
                            node_name=pve_node,
                            bridge_name=px.lab_bridge,
                            vids=vids,
                            ports=args.settings.bridge_ports,
                            comment=f"mlseclab {spec.lab.name}: lab segments (VLANs {vids})",
                            opts=child,
                        )
                    )
            for seg_name, seg in spec.networks.items():
                self.attachments[seg_name] = Attachment(px.lab_bridge, seg.vlan)
        else:
            zone = provider.sdn_vlan_zone(
                f"{name}-zone",
                zone_id=zone_id(spec),
                bridge_name=px.lab_bridge,
                nodes=px.nodes,
                opts=child,
            )
            pending: list[pulumi.Resource] = [zone]
            for seg_name, seg in spec.networks.items():
                vnet = provider.sdn_vnet(
                    f"{name}-vnet-{seg_name}",
                    vnet_id=vnet_id(zone_id(spec), seg.vlan),
                    zone=zone.id,
                    tag=seg.vlan,
                    alias=f"{spec.lab.name}-{seg_name}"[:256],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[zone]),
                )
                subnet = provider.sdn_subnet(
                    f"{name}-subnet-{seg_name}",
                    vnet=vnet.id,
                    cidr=seg.cidr,
                    gateway=str(seg.gateway_address),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[vnet]),
                )
                pending += [vnet, subnet]
                self.attachments[seg_name] = Attachment(vnet.id, None)
            # SDN objects stay pending until applied; re-apply whenever any of them is replaced.
            applier = provider.sdn_applier(
                f"{name}-apply",
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=pending, replace_with=list(pending)
                ),
            )
            self.ready.append(applier)
        self.register_outputs({"segments": sorted(self.attachments)})
