"""The lab's network on one host: a router namespace with one bridge per segment.

Every node port on a bridge is isolated (no port reaches another port at layer
2) and the bridge answers ARP for the whole segment (proxy ARP, private-VLAN
style), so even two nodes on the same segment talk only through the router's
nftables forward chain. The host reaches the lab through one veth uplink; no
segment has a route off the host.

Each ``ensure_*`` reads the live state of a namespace once (:class:`Snapshot`)
and changes only what differs from the spec, so converging a lab that is
already up costs a handful of reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlseclab.process import run
from mlseclab.targets.local.names import LocalNames
from mlseclab.topology import LabNode, Topology

NETNS_DIR = Path("/run/netns")


@dataclass
class Link:
    name: str
    kind: str  # bridge | veth | ...
    up: bool
    master: str | None
    isolated: bool


@dataclass
class Snapshot:
    """What is live in one network namespace (None: the host's own)."""

    netns: str | None
    exists: bool = True
    links: dict[str, Link] = field(default_factory=dict)
    addresses: dict[str, set[str]] = field(default_factory=dict)
    routes: set[tuple[str, str, str, str]] = field(default_factory=set)  # (table, dst, via, dev)
    rules: set[tuple[int, str, str]] = field(default_factory=set)  # (priority, from, table)
    sysctls: dict[str, str] = field(default_factory=dict)


def _ip_json(netns: str | None, *args: str) -> list[dict[str, Any]]:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-j", *args]
    out = run(cmd, check=False).stdout.strip()
    data = json.loads(out) if out else []
    return data if isinstance(data, list) else []


def snapshot(netns: str | None, sysctl_keys: list[str] | None = None) -> Snapshot:
    if netns is not None and not netns_exists(netns):
        return Snapshot(netns, exists=False)
    snap = Snapshot(netns)
    for link in _ip_json(netns, "-d", "addr", "show"):  # links, their flags and addresses
        info = link.get("linkinfo", {})
        snap.links[link["ifname"]] = Link(
            name=link["ifname"],
            kind=info.get("info_kind", ""),
            up="UP" in link.get("flags", []),
            master=link.get("master"),
            isolated=bool(info.get("info_slave_data", {}).get("isolated", False)),
        )
        snap.addresses[link["ifname"]] = {
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        }
    for route in _ip_json(netns, "-4", "route", "show", "table", "all"):
        snap.routes.add(
            (
                str(route.get("table", "main")),
                route.get("dst", ""),
                route.get("gateway", ""),
                route.get("dev", ""),
            )
        )
    if netns is not None:
        for rule in _ip_json(netns, "-4", "rule", "show"):
            snap.rules.add(
                (
                    int(rule.get("priority", 0)),
                    str(rule.get("src", "all")),
                    str(rule.get("table", "")),
                )
            )
    if sysctl_keys and netns is not None:
        proc = run(["ip", "netns", "exec", netns, "sysctl", "-e", *sysctl_keys], check=False)
        for line in proc.stdout.splitlines():
            key, _, value = line.partition(" = ")
            snap.sysctls[key.strip()] = value.strip()
    return snap


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_netns(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def link_exists(name: str, netns: str | None = None) -> bool:
    return name in snapshot(netns).links


def _ip(netns: str | None, *args: str) -> None:
    run(["ip"] + (["-n", netns] if netns else []) + list(args))


class Converger:
    """Applies the difference between a namespace's snapshot and what the lab wants."""

    def __init__(self, netns: str | None, sysctls: dict[str, str] | None = None) -> None:
        self.netns = netns
        self.created: list[str] = []
        self.settings = 0  # addresses, routes, rules, sysctls and link states changed
        self.wanted_sysctls = sysctls or {}
        if netns is not None and not netns_exists(netns):
            run(["ip", "netns", "add", netns])
            self.created.append(f"netns {netns}")
        self.snap = snapshot(netns, list(self.wanted_sysctls))
        if (
            netns is not None
            and not self.snap.links.get("lo", Link("lo", "", False, None, False)).up
        ):
            _ip(netns, "link", "set", "lo", "up")

    def sysctls(self) -> None:
        changes = [
            f"{k}={v}" for k, v in self.wanted_sysctls.items() if self.snap.sysctls.get(k) != v
        ]
        if changes and self.netns is not None:
            run(["ip", "netns", "exec", self.netns, "sysctl", "-q", "-w", *changes])
            self.settings += len(changes)

    def address(self, dev: str, cidr: str) -> None:
        if cidr not in self.snap.addresses.get(dev, set()):
            _ip(self.netns, "addr", "add", cidr, "dev", dev)
            self.settings += 1

    def up(self, dev: str) -> None:
        link = self.snap.links.get(dev)
        if link is None or not link.up:
            _ip(self.netns, "link", "set", dev, "up")
            self.settings += 1

    def route(self, destination: str, via: str, dev: str, table: str = "main") -> None:
        if (table, destination, via, dev) not in self.snap.routes:
            _ip(self.netns, "route", "replace", destination, "via", via, "dev", dev, "table", table)
            self.settings += 1

    def rule(self, priority: int, source: str, table: str) -> None:
        if (priority, source, table) not in self.snap.rules:
            _ip(
                self.netns,
                "rule",
                "add",
                "priority",
                str(priority),
                "from",
                source,
                "lookup",
                table,
            )
            self.settings += 1

    def report(self) -> list[str]:
        """What was created, and one line for the settings changed in this namespace."""
        where = self.netns or "host"
        extra = [f"{self.settings} network settings in {where}"] if self.settings else []
        return self.created + extra


def router_sysctls(topo: Topology, names: LocalNames) -> dict[str, str]:
    """The router forwards between segments and nowhere else; no redirects (it hairpins
    same-segment traffic on purpose), strict reverse-path filtering, no IPv6."""
    wanted = {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.all.send_redirects": "0",
        "net.ipv4.conf.default.send_redirects": "0",
        "net.ipv4.conf.all.rp_filter": "1",
        "net.ipv4.conf.default.rp_filter": "1",
        "net.ipv4.conf.all.log_martians": "1",
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
    }
    for seg_name in topo.spec.networks:
        br = names.bridge(seg_name)
        wanted[f"net.ipv4.conf.{br}.send_redirects"] = "0"
        wanted[f"net.ipv4.conf.{br}.proxy_arp"] = "1"
        wanted[f"net.ipv4.conf.{br}.proxy_arp_pvlan"] = "1"
    return wanted


def ensure_router(topo: Topology, names: LocalNames) -> list[str]:
    """Router namespace, bridges with the gateways, forwarding; returns what was created."""
    c = Converger(names.router_ns, router_sysctls(topo, names))
    for seg_name, seg in topo.spec.networks.items():
        br = names.bridge(seg_name)
        if br not in c.snap.links:
            _ip(c.netns, "link", "add", "name", br, "type", "bridge", "stp_state", "0")
            c.created.append(f"bridge {br}")
        c.address(br, f"{seg.gateway_address}/{seg.network.prefixlen}")
        c.up(br)
    c.sysctls()  # after the bridges exist: some keys are per bridge
    return c.report()


def ensure_uplink(topo: Topology, names: LocalNames) -> list[str]:
    """The operator's veth from the host into the router, and host routes to each segment."""
    host = Converger(None)
    router = snapshot(names.router_ns)
    if names.host_uplink not in host.snap.links:
        if names.router_uplink in router.links:  # half-made by an interrupted run
            _ip(names.router_ns, "link", "del", names.router_uplink)
        _ip(
            None,
            "link",
            "add",
            "name",
            names.host_uplink,
            "type",
            "veth",
            "peer",
            "name",
            names.router_uplink,
            "netns",
            names.router_ns,
        )
        host.created.append(f"veth {names.host_uplink}")
        router = snapshot(names.router_ns)
    rc = Converger(names.router_ns)
    rc.snap = router
    prefix = topo.spec.lab.local.uplink_cidr.split("/")[1]
    host.address(names.host_uplink, f"{topo.operator_address}/{prefix}")
    rc.address(names.router_uplink, f"{topo.router_uplink_address}/{prefix}")
    host.up(names.host_uplink)
    rc.up(names.router_uplink)
    for seg in topo.spec.networks.values():
        host.route(seg.cidr, topo.router_uplink_address, names.host_uplink)
    return host.report()


def ensure_node_network(node: LabNode, names: LocalNames, router: Snapshot) -> list[str]:
    """The node's namespace, one veth per NIC into its segment's bridge, addresses, routes.

    ``router`` is a snapshot of the router namespace; it is kept up to date here,
    so one snapshot serves every node of the lab.
    """
    ns, rns = names.node_ns(node.name), names.router_ns
    c = Converger(
        ns, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    )
    for iface in node.interfaces:
        port = names.node_port(node.name, iface.index)
        if iface.name not in c.snap.links:
            if port in router.links:
                _ip(rns, "link", "del", port)
            _ip(
                rns,
                "link",
                "add",
                "name",
                port,
                "type",
                "veth",
                "peer",
                "name",
                iface.name,
                "netns",
                ns,
            )
            c.created.append(f"veth {port}")
            router.links.pop(port, None)
        live = router.links.get(port)
        bridge = names.bridge(iface.network)
        if live is None or live.master != bridge:
            _ip(rns, "link", "set", port, "master", bridge)
        if live is None or not live.isolated:
            run(["bridge", "-n", rns, "link", "set", "dev", port, "isolated", "on"])
        if live is None or not live.up:
            _ip(rns, "link", "set", port, "up")
        router.links[port] = Link(port, "veth", True, bridge, True)
        c.address(iface.name, iface.cidr)
        c.up(iface.name)
    c.sysctls()
    for route in node.routes:
        c.route(route.destination, route.via, route.dev)
    for st in node.source_tables:
        for route in st.routes:
            c.route(route.destination, route.via, route.dev, str(st.table))
        c.rule(st.priority, st.source, str(st.table))
    return c.report()


def delete_link(name: str, netns: str | None = None) -> bool:
    if link_exists(name, netns):
        _ip(netns, "link", "del", name)
        return True
    return False


def delete_netns(name: str) -> bool:
    if netns_exists(name):
        run(["ip", "netns", "del", name])
        return True
    return False


def forget_neighbours(names: LocalNames, addresses: list[str]) -> None:
    """Drop the router's ARP entries for ``addresses``: a re-created node answers from
    new MACs, and a cached old one would black-hole it until the entry expires (~30 s)."""
    if not netns_exists(names.router_ns):
        return
    for address in addresses:
        run(["ip", "-n", names.router_ns, "neigh", "flush", "to", address], check=False)


def remove_host_routes(topo: Topology, names: LocalNames) -> None:
    for seg in topo.spec.networks.values():
        run(["ip", "route", "del", seg.cidr, "dev", names.host_uplink], check=False)
