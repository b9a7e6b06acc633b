"""The Proxmox firewall, derived from the lab's flows (``topology.rules``), never hand-listed.

- Cluster options: the firewall on (without it no VM rule applies), ebtables on.
- One security group per role: the role's ingress, one ``in`` rule per resolved
  flow, with explicit source and destination addresses.
- Per VM: firewall options (enabled, input and output policy DROP, IP and MAC
  filters so a VM cannot spoof another's address), the ``ipfilter-netN`` ipsets
  that IP filter checks against, and rules: the role's group plus one ``out``
  rule per flow the VM may open as a client.

A connection from A to B therefore needs A's ``out`` rule and B's ``in`` rule,
both derived from the same flow; everything else is dropped both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from mlseclab.spec import ANY, OPERATOR, LabSpec
from mlseclab.topology import Rule, Topology
from stacks import provider
from stacks.settings import StackSettings, short_name

GROUP_NAME_LIMIT = 18  # Proxmox security group names


def group_name(lab: str, role: str) -> str:
    return short_name(f"{lab}-{role}", GROUP_NAME_LIMIT)


def operator_sources(spec: LabSpec, settings: StackSettings) -> tuple[str, ...]:
    if settings.operator_sources:
        return settings.operator_sources
    return (str(spec.networks[spec.mgmt_segment_name()].gateway_address),)


def rule_sources(rule: Rule, spec: LabSpec, settings: StackSettings) -> tuple[str, ...]:
    """Source addresses of a rule on Proxmox; () means any source."""
    if rule.sources == (OPERATOR,):
        return operator_sources(spec, settings)
    return rule.source_addresses


def _comment(rule: Rule) -> str:
    return f"flow {rule.flow}"[:128]


def ingress_rule(rule: Rule, spec: LabSpec, settings: StackSettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "in",
        "action": "ACCEPT",
        "proto": rule.proto,
        "dport": str(rule.port),
        "dest": ",".join(rule.destination_addresses),
        "comment": _comment(rule),
        "enabled": True,
        "log": "nolog",
    }
    sources = rule_sources(rule, spec, settings)
    if sources:
        out["source"] = ",".join(sources)
    return out


def egress_rule(rule: Rule) -> dict[str, Any]:
    return {
        "type": "out",
        "action": "ACCEPT",
        "proto": rule.proto,
        "dport": str(rule.port),
        "dest": ",".join(rule.destination_addresses),
        "comment": _comment(rule),
        "enabled": True,
        "log": "nolog",
    }


def effective_rules(topology: Topology) -> tuple[Rule, ...]:
    """``topology.rules`` minus rules left with no source.

    A flow from a role or node to a set that includes its own source (``from:
    observability, to: all``) resolves, for that node, to a rule with no source
    addresses, which ``Rule.any_source`` reads as "from anywhere". Only ``from: any``
    means anywhere: those rules have nobody to allow and are dropped here.
    """
    labels_from_any = {f.label for f in topology.spec.flows if f.from_ == ANY}
    return tuple(r for r in topology.rules if r.source_addresses or r.flow in labels_from_any)


def egress_of(topology: Topology, node: str) -> tuple[Rule, ...]:
    return tuple(
        r
        for r in effective_rules(topology)
        if r.destination != node and (not r.source_addresses or node in r.sources)
    )


def role_group_rules(
    topology: Topology, role: str, settings: StackSettings
) -> list[dict[str, Any]]:
    """The ingress of every node of ``role``, one rule per resolved flow."""
    return [
        ingress_rule(r, topology.spec, settings)
        for r in effective_rules(topology)
        if topology.nodes[r.destination].role == role
    ]


def vm_rules(topology: Topology, node: str) -> list[dict[str, Any]]:
    """The VM's own rules: its role's group, then what it may open as a client."""
    lab = topology.spec.lab.name
    role = topology.nodes[node].role
    group = {
        "security_group": group_name(lab, role),
        "enabled": True,
        "comment": f"ingress of role {role}",
    }
    return [group, *(egress_rule(r) for r in egress_of(topology, node))]


VM_FIREWALL_OPTIONS: dict[str, Any] = {
    "enabled": True,
    "input_policy": "DROP",
    "output_policy": "DROP",
    "ipfilter": True,  # only the addresses in ipfilter-netN may leave netN
    "macfilter": True,  # only the NIC's own MAC may leave it
    "dhcp": False,  # addresses are static (cloud-init)
    "ndp": False,
    "radv": False,
    "log_level_in": "info",  # dropped packets are logged: denied flows show up
    "log_level_out": "info",
}


@dataclass
class LabFirewallArgs:
    topology: Topology
    settings: StackSettings


class LabFirewall(pulumi.ComponentResource):
    """Cluster firewall options and one security group per role."""

    groups: dict[str, pulumi.Resource]

    def __init__(
        self, name: str, args: LabFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlseclab:firewall:LabFirewall", name, None, opts)
        topo = args.topology
        lab = topo.spec.lab.name
        # Host traffic: input DROP is Proxmox's default (it keeps the GUI and SSH open to the
        # cluster network); output stays ACCEPT so the hosts keep working (corosync, updates).
        # The lab's own default-deny lives on each VM (VM_FIREWALL_OPTIONS).
        self.cluster = provider.cluster_firewall(
            f"{name}-cluster",
            input_policy="DROP",
            output_policy="ACCEPT",
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.groups = {}
        for role in sorted({n.role for n in topo.nodes.values()}):
            self.groups[role] = provider.security_group(
                f"{name}-group-{role}",
                group_name=group_name(lab, role),
                comment=f"mlseclab {lab}: ingress of role {role}",
                rules=role_group_rules(topo, role, args.settings),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster]),
            )
        self.register_outputs({"groups": sorted(self.groups)})


@dataclass
class VmFirewallArgs:
    topology: Topology
    node: str
    pve_node: str
    vm_id: pulumi.Input[int]
    nic_addresses: Sequence[str]  # in NIC order: net0, net1, ...


class VmFirewall(pulumi.ComponentResource):
    """One VM's firewall: options, anti-spoofing ipsets and rules."""

    def __init__(
        self, name: str, args: VmFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlseclab:firewall:VmFirewall", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ipsets = [
            provider.vm_ipset(
                f"{name}-ipfilter-net{i}",
                node_name=args.pve_node,
                vm_id=args.vm_id,
                ipset_name=f"ipfilter-net{i}",
                cidrs=[address],
                comment=f"net{i} may only send from {address}",
                opts=child,
            )
            for i, address in enumerate(args.nic_addresses)
        ]
        self.rules = provider.vm_firewall_rules(
            f"{name}-rules",
            node_name=args.pve_node,
            vm_id=args.vm_id,
            rules=vm_rules(args.topology, args.node),
            opts=child,
        )
        # Enable last: the rules and ipsets are in place before the policy turns to DROP.
        self.options = provider.vm_firewall_options(
            f"{name}-options",
            {"node_name": args.pve_node, "vm_id": args.vm_id, **VM_FIREWALL_OPTIONS},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.rules, *ipsets]),
        )
        self.register_outputs({})
