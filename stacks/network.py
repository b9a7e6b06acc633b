"""Lab segments on Proxmox: VLANs on a VLAN-aware lab bridge, or an SDN VLAN zone.

``lab.proxmox.network_mode`` chooses:

- ``bridge``: one VLAN-aware Linux bridge (``lab_bridge``) per Proxmox node,
  allowing only the lab's VLAN ids; each VM NIC carries its segment's VLAN tag.
- ``sdn``: one SDN VLAN zone on ``lab_bridge``, one vnet (tagged with the
  segment's VLAN) and one subnet per segment, then an ``Applier`` so that the
  pending SDN configuration takes effect; VM NICs attach to the vnet.

The management bridge (``mgmt_bridge``, vmbr0) is never touched: every change
to a node's networking reloads it and can cut access mid-run (bpg#3063).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from mlseclab.spec import LabSpec, ProxmoxSettings
from stacks import provider
from stacks.settings import StackSettings, short_name


@dataclass(frozen=True)
class Attachment:
    """Where a NIC on a segment plugs in."""

    bridge: pulumi.Input[str]
    vlan_id: int | None  # None: the bridge (an SDN vnet) tags the traffic itself


@dataclass
class LabNetworkArgs:
    spec: LabSpec
    settings: StackSettings


def vnet_id(zone: str, vlan: int) -> str:
    """SDN vnet ids are at most 8 characters: zone prefix + VLAN id (unique in a zone)."""
    return f"{zone[:4]}{vlan}"


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
            zone_id = short_name(px.sdn_zone, 8)
            zone = provider.sdn_vlan_zone(
                f"{name}-zone",
                zone_id=zone_id,
                bridge_name=px.lab_bridge,
                nodes=px.nodes,
                opts=child,
            )
            pending: list[pulumi.Resource] = [zone]
            for seg_name, seg in spec.networks.items():
                vnet = provider.sdn_vnet(
                    f"{name}-vnet-{seg_name}",
                    vnet_id=vnet_id(zone_id, seg.vlan),
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
