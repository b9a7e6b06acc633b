"""The one module that names pulumi-proxmoxve classes.

Everything else in ``stacks/`` calls the small constructors below, so the
provider's next rename (upstream plans one at its v1.0: VmLegacy, users and
firewall classes get new names) is a change to this file only. The type tokens
are exported too: tests, the policy pack and the driver match on them.

Nested arguments are passed as plain dicts with snake_case keys (the provider's
``*ArgsDict`` shapes); the engine and the mocks see them camelCase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_proxmoxve as pve

# -- type tokens (what the engine, the mocks and the policy pack see) ------------------
PROVIDER = "pulumi:providers:proxmoxve"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
PCI_MAPPING = "proxmoxve:hardware/mapping/pci:Pci"
DIR_MAPPING = "proxmoxve:hardware/mapping/dir:Dir"
BRIDGE = "proxmoxve:network/linux/bridge:Bridge"
SDN_VLAN_ZONE = "proxmoxve:sdn/zone/vlan:Vlan"
SDN_VNET = "proxmoxve:sdn/vnet:Vnet"
SDN_SUBNET = "proxmoxve:sdn/subnet:Subnet"
SDN_APPLIER = "proxmoxve:sdn/applier:Applier"
CLUSTER_FIREWALL = "proxmoxve:cluster/firewallLegacy:FirewallLegacy"
SECURITY_GROUP = "proxmoxve:cluster/firewall/security/groupLegacy:GroupLegacy"
FIREWALL_OPTIONS = "proxmoxve:firewall/optionsLegacy:OptionsLegacy"
FIREWALL_RULES = "proxmoxve:firewall/rulesLegacy:RulesLegacy"
FIREWALL_IPSET = "proxmoxve:firewall/ipsetLegacy:IpsetLegacy"
USER = "proxmoxve:index/userLegacy:UserLegacy"
GROUP = "proxmoxve:index/groupLegacy:GroupLegacy"
ROLE = "proxmoxve:index/roleLegacy:RoleLegacy"
ACL = "proxmoxve:index/aclLegacy:AclLegacy"
TOKEN = "proxmoxve:user/token:Token"  # noqa: S105 - a type token
POOL = "proxmoxve:index/poolLegacy:PoolLegacy"
GET_VMS = "proxmoxve:index/getVmsLegacy:getVmsLegacy"

Props = Mapping[str, Any]


def _dicts(items: Sequence[Props]) -> list[Any]:
    """Plain dicts for the provider's nested ``*ArgsDict`` inputs."""
    return [dict(i) for i in items]


def _opts(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    return opts if opts is not None else pulumi.ResourceOptions()


# -- provider --------------------------------------------------------------------------
def provider(
    name: str,
    *,
    endpoint: str,
    insecure: bool,
    api_token: pulumi.Input[str] | None,
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.ProviderResource:
    """An explicit provider. With ``api_token`` None the plugin reads PROXMOX_VE_API_TOKEN."""
    return pve.Provider(
        name, endpoint=endpoint, insecure=insecure, api_token=api_token, opts=_opts(opts)
    )


# -- compute ---------------------------------------------------------------------------
def vm(
    name: str, props: Props, opts: pulumi.ResourceOptions | None = None
) -> pulumi.CustomResource:
    """A full-featured VM (clone, cloud-init, hostpci by mapping, virtiofs)."""
    return pve.VmLegacy(name, opts=_opts(opts), **props)


def template_by_tag(tag: str, opts: pulumi.InvokeOptions | None = None) -> pulumi.Output[Any]:
    """The (node_name, vm_id) of the one template VM carrying ``tag``; fails on 0 or 2+."""
    found = pve.get_vms_legacy_output(tags=[tag], opts=opts)

    def pick(result: Any) -> dict[str, Any]:
        vms = [v for v in (result.vms or []) if getattr(v, "template", None) in (True, None)]
        if len(vms) != 1:
            raise ValueError(
                f"expected exactly one template VM tagged {tag!r}, found {len(vms)}; "
                "tag one cloud-init template or set lab.proxmox.template.vm_id"
            )
        return {"node_name": vms[0].node_name, "vm_id": int(vms[0].vm_id)}

    return found.apply(pick)


def dir_mapping(
    name: str,
    *,
    mapping_name: str,
    comment: str,
    maps: Sequence[Props],
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    """A cluster directory mapping (virtiofs source) for a host path on each node."""
    return pve.hardware.mapping.Dir(
        name, name=mapping_name, comment=comment, maps=_dicts(maps), opts=_opts(opts)
    )


def pool(
    name: str, *, pool_id: str, comment: str, opts: pulumi.ResourceOptions | None = None
) -> pulumi.CustomResource:
    return pve.PoolLegacy(name, pool_id=pool_id, comment=comment, opts=_opts(opts))


# -- network ---------------------------------------------------------------------------
def bridge(
    name: str,
    *,
    node_name: str,
    bridge_name: str,
    vids: str,
    ports: Sequence[str],
    comment: str,
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    """A VLAN-aware Linux bridge on one node (never the management bridge)."""
    return pve.network.linux.Bridge(
        name,
        node_name=node_name,
        name=bridge_name,
        vlan_aware=True,
        vids=vids,
        ports=list(ports),
        autostart=True,
        comment=comment,
        opts=_opts(opts),
    )


def sdn_vlan_zone(
    name: str,
    *,
    zone_id: str,
    bridge_name: str,
    nodes: Sequence[str],
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    return pve.sdn.zone.Vlan(
        name, resource_id=zone_id, bridge=bridge_name, nodes=list(nodes), opts=_opts(opts)
    )


def sdn_vnet(
    name: str,
    *,
    vnet_id: str,
    zone: pulumi.Input[str],
    tag: int,
    alias: str,
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    return pve.sdn.Vnet(
        name,
        resource_id=vnet_id,
        zone=zone,
        tag=tag,
        alias=alias,
        isolate_ports=False,
        vlan_aware=False,
        opts=_opts(opts),
    )


def sdn_subnet(
    name: str,
    *,
    vnet: pulumi.Input[str],
    cidr: str,
    gateway: str,
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    return pve.sdn.Subnet(name, vnet=vnet, cidr=cidr, gateway=gateway, snat=False, opts=_opts(opts))


def sdn_applier(name: str, opts: pulumi.ResourceOptions | None = None) -> pulumi.CustomResource:
    """Applies pending SDN configuration (zones, vnets, subnets stay pending until then)."""
    return pve.sdn.Applier(name, on_create=True, on_destroy=True, opts=_opts(opts))


# -- firewall --------------------------------------------------------------------------
def cluster_firewall(
    name: str, *, input_policy: str, output_policy: str, opts: pulumi.ResourceOptions | None = None
) -> pulumi.CustomResource:
    return pve.cluster.FirewallLegacy(
        name,
        enabled=True,
        ebtables=True,
        input_policy=input_policy,
        output_policy=output_policy,
        opts=_opts(opts),
    )


def security_group(
    name: str,
    *,
    group_name: str,
    comment: str,
    rules: Sequence[Props],
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    return pve.cluster.firewall.security.GroupLegacy(
        name, name=group_name, comment=comment, rules=_dicts(rules), opts=_opts(opts)
    )


def vm_firewall_options(
    name: str, props: Props, opts: pulumi.ResourceOptions | None = None
) -> pulumi.CustomResource:
    return pve.firewall.OptionsLegacy(name, opts=_opts(opts), **props)


def vm_firewall_rules(
    name: str,
    *,
    node_name: pulumi.Input[str],
    vm_id: pulumi.Input[int],
    rules: Sequence[Props],
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    return pve.firewall.RulesLegacy(
        name, node_name=node_name, vm_id=vm_id, rules=_dicts(rules), opts=_opts(opts)
    )


def vm_ipset(
    name: str,
    *,
    node_name: pulumi.Input[str],
    vm_id: pulumi.Input[int],
    ipset_name: str,
    cidrs: Sequence[str],
    comment: str,
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    return pve.firewall.IpsetLegacy(
        name,
        node_name=node_name,
        vm_id=vm_id,
        name=ipset_name,
        comment=comment,
        cidrs=[{"name": c} for c in cidrs],
        opts=_opts(opts),
    )


# -- access ----------------------------------------------------------------------------
def role(
    name: str,
    *,
    role_id: str,
    privileges: Sequence[str],
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    return pve.RoleLegacy(name, role_id=role_id, privileges=list(privileges), opts=_opts(opts))


def user(
    name: str,
    *,
    user_id: str,
    comment: str,
    groups: Sequence[pulumi.Input[str]] = (),
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    """A user without a password: it can only authenticate through its API tokens."""
    return pve.UserLegacy(
        name, user_id=user_id, comment=comment, enabled=True, groups=list(groups), opts=_opts(opts)
    )


def group(
    name: str, *, group_id: str, comment: str, opts: pulumi.ResourceOptions | None = None
) -> pulumi.CustomResource:
    return pve.GroupLegacy(name, group_id=group_id, comment=comment, opts=_opts(opts))


def token(
    name: str,
    *,
    user_id: pulumi.Input[str],
    token_name: str,
    comment: str,
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    """A privilege-separated token: it has only the rights its own ACLs grant."""
    return pve.user.Token(
        name,
        user_id=user_id,
        token_name=token_name,
        comment=comment,
        privileges_separation=True,
        opts=_opts(opts),
    )


def acl(
    name: str,
    *,
    path: pulumi.Input[str],
    role_id: pulumi.Input[str],
    token_id: pulumi.Input[str] | None = None,
    group_id: pulumi.Input[str] | None = None,
    propagate: bool = True,
    opts: pulumi.ResourceOptions | None = None,
) -> pulumi.CustomResource:
    return pve.AclLegacy(
        name,
        path=path,
        role_id=role_id,
        token_id=token_id,
        group_id=group_id,
        propagate=propagate,
        opts=_opts(opts),
    )
