"""The lab's network on one host: a router namespace with one bridge per segment.

Every node port on a bridge is isolated (no port reaches another port at layer
2) and the bridge answers ARP for the whole segment (proxy ARP, private-VLAN
style), so even two nodes on the same segment talk only through the router's
nftables forward chain. The host reaches the lab through one veth uplink; no
segment has a route off the host.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlseclab.targets.local.host import ok, run
from mlseclab.targets.local.names import LocalNames
from mlseclab.topology import LabNode, Topology

NETNS_DIR = Path("/run/netns")


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_netns(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def link_exists(name: str, netns: str | None = None) -> bool:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return ok(cmd)


def _ip(netns: str | None, *args: str) -> None:
    run(["ip"] + (["-n", netns] if netns else []) + list(args))


def _sysctl(netns: str, key: str, value: str) -> None:
    run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{key}={value}"])


def _addresses(netns: str | None, dev: str) -> set[str]:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-j", "-4", "addr", "show", "dev", dev]
    proc = run(cmd, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return set()
    data = json.loads(proc.stdout)
    return {f"{a['local']}/{a['prefixlen']}" for link in data for a in link.get("addr_info", [])}


def ensure_netns(name: str) -> bool:
    """Create the namespace with loopback up; True when it was created."""
    if netns_exists(name):
        return False
    run(["ip", "netns", "add", name])
    _ip(name, "link", "set", "lo", "up")
    return True


def ensure_address(netns: str | None, dev: str, cidr: str) -> None:
    if cidr not in _addresses(netns, dev):
        _ip(netns, "addr", "add", cidr, "dev", dev)


def ensure_router(topo: Topology, names: LocalNames) -> list[str]:
    """Router namespace, bridges with the gateways, forwarding; returns what was created."""
    created = []
    ns = names.router_ns
    if ensure_netns(ns):
        created.append(f"netns {ns}")
    # The router forwards between segments and nowhere else; it sends no redirects
    # (it hairpins same-segment traffic on purpose) and logs martians.
    for key, value in (("net.ipv4.ip_forward", "1"),
                       ("net.ipv4.conf.all.send_redirects", "0"),
                       ("net.ipv4.conf.default.send_redirects", "0"),
                       ("net.ipv4.conf.all.rp_filter", "1"),
                       ("net.ipv4.conf.default.rp_filter", "1"),
                       ("net.ipv4.conf.all.log_martians", "1"),
                       ("net.ipv6.conf.all.disable_ipv6", "1"),
                       ("net.ipv6.conf.default.disable_ipv6", "1")):
        _sysctl(ns, key, value)
    for seg_name, seg in topo.spec.networks.items():
        br = names.bridge(seg_name)
        if not link_exists(br, ns):
            _ip(ns, "link", "add", "name", br, "type", "bridge", "stp_state", "0")
            created.append(f"bridge {br}")
        _sysctl(ns, f"net.ipv4.conf.{br}.send_redirects", "0")
        _sysctl(ns, f"net.ipv4.conf.{br}.proxy_arp", "1")
        _sysctl(ns, f"net.ipv4.conf.{br}.proxy_arp_pvlan", "1")
        ensure_address(ns, br, f"{seg.gateway_address}/{seg.network.prefixlen}")
        _ip(ns, "link", "set", br, "up")
    return created


def ensure_uplink(topo: Topology, names: LocalNames) -> list[str]:
    """The operator's veth from the host into the router, and host routes to each segment."""
    created = []
    ns, host_if = names.router_ns, names.host_uplink
    if not link_exists(host_if):
        if link_exists(names.router_uplink, ns):  # half-made by an interrupted run
            _ip(ns, "link", "del", names.router_uplink)
        _ip(None, "link", "add", "name", host_if, "type", "veth",
            "peer", "name", names.router_uplink, "netns", ns)
        created.append(f"veth {host_if}")
    prefix = topo.spec.lab.local.uplink_cidr.split("/")[1]
    ensure_address(None, host_if, f"{topo.operator_address}/{prefix}")
    ensure_address(ns, names.router_uplink, f"{topo.router_uplink_address}/{prefix}")
    _ip(None, "link", "set", host_if, "up")
    _ip(ns, "link", "set", names.router_uplink, "up")
    for seg in topo.spec.networks.values():
        run(["ip", "route", "replace", seg.cidr, "via", topo.router_uplink_address,
             "dev", host_if])
    return created


def ensure_node_network(node: LabNode, topo: Topology, names: LocalNames) -> list[str]:
    """The node's namespace, one veth per NIC into its segment's bridge, addresses, routes."""
    created = []
    ns, rns = names.node_ns(node.name), names.router_ns
    if ensure_netns(ns):
        created.append(f"netns {ns}")
    _sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
    _sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
    for iface in node.interfaces:
        port = names.node_port(node.name, iface.index)
        if not link_exists(iface.name, ns):
            if link_exists(port, rns):
                _ip(rns, "link", "del", port)
            _ip(rns, "link", "add", "name", port, "type", "veth",
                "peer", "name", iface.name, "netns", ns)
            created.append(f"veth {port}")
        _ip(rns, "link", "set", port, "master", names.bridge(iface.network))
        run(["bridge", "-n", rns, "link", "set", "dev", port, "isolated", "on"])
        _ip(rns, "link", "set", port, "up")
        ensure_address(ns, iface.name, iface.cidr)
        _ip(ns, "link", "set", iface.name, "up")
    for route in node.routes:
        _ip(ns, "route", "replace", route.destination, "via", route.via, "dev", route.dev)
    return created


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


def remove_host_routes(topo: Topology, names: LocalNames) -> None:
    for seg in topo.spec.networks.values():
        run(["ip", "route", "del", seg.cidr, "dev", names.host_uplink], check=False)
