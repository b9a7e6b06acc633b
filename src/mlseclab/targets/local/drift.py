"""Infrastructure drift of a local lab: what is live against what the spec derives.

Read-only: one snapshot per network namespace, the router's nftables table,
the containers and their mounts. Every difference is a :class:`DriftFinding`;
``mlseclab up`` puts each of them back.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from mlseclab.drift import INFRASTRUCTURE, DriftFinding
from mlseclab.targets.local import network, nodes

if TYPE_CHECKING:
    from mlseclab.targets.local.target import LocalTarget

ROUTER = "router"


def _finding(node: str, what: str, expected: str, found: str, detail: str = "") -> DriftFinding:
    return DriftFinding(
        layer=INFRASTRUCTURE, node=node, what=what, expected=expected, found=found, detail=detail
    )


def _mounts_of(pid: int) -> dict[str, set[str]]:
    """Mount point -> options, as the node's init sees them."""
    out: dict[str, set[str]] = {}
    try:
        text = Path(f"/proc/{pid}/mounts").read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out[parts[1]] = set(parts[3].split(","))
    return out


def router_drift(t: LocalTarget) -> list[DriftFinding]:
    names, topo = t.names, t.topo
    rns = names.router_ns
    snap = network.snapshot(rns, list(network.router_sysctls(topo, names)))
    if not snap.exists:
        return [_finding(ROUTER, f"netns {rns}", "present", "absent")]
    out: list[DriftFinding] = []
    for seg_name, seg in topo.spec.networks.items():
        br = names.bridge(seg_name)
        link = snap.links.get(br)
        if link is None:
            out.append(_finding(ROUTER, f"bridge {br}", f"segment {seg_name}", "absent"))
            continue
        want = f"{seg.gateway_address}/{seg.network.prefixlen}"
        if want not in snap.addresses.get(br, set()):
            have = ", ".join(sorted(snap.addresses.get(br, set()))) or "none"
            out.append(_finding(ROUTER, f"bridge {br} address", want, have))
        if not link.up:
            out.append(_finding(ROUTER, f"bridge {br} state", "up", "down"))
    for key, value in network.router_sysctls(topo, names).items():
        live = snap.sysctls.get(key)
        if live is not None and live != value:
            out.append(_finding(ROUTER, f"sysctl {key}", value, live))
    for node in topo.nodes.values():
        for iface in node.interfaces:
            port = names.node_port(node.name, iface.index)
            link = snap.links.get(port)
            if link is None:
                continue  # reported with the node's own network
            if link.master != names.bridge(iface.network):
                out.append(
                    _finding(
                        node.name,
                        f"bridge port {port}",
                        f"in {names.bridge(iface.network)}",
                        f"in {link.master or 'no bridge'}",
                    )
                )
            if not link.isolated:
                out.append(_finding(node.name, f"bridge port {port} isolation", "on", "off"))
    metrics = t.router_metrics()
    if metrics is not None and not t.router_metrics_pids():
        out.append(
            _finding(
                ROUTER,
                "router metrics exporter",
                f"serving drop counters on {metrics['address']}:{metrics['port']}",
                "not running",
            )
        )
    live = t.live_router_table()
    applied = names.lab_dir / "router.live"
    if live is None:
        out.append(_finding(ROUTER, f"nftables table {names.nft_table}", "present", "absent"))
    elif applied.exists() and live != applied.read_text(encoding="utf-8"):
        diff = "\n".join(
            difflib.unified_diff(
                applied.read_text(encoding="utf-8").splitlines(),
                live.splitlines(),
                "applied by mlseclab",
                "live",
                lineterm="",
                n=1,
            )
        )
        out.append(
            _finding(
                ROUTER,
                f"nftables table {names.nft_table}",
                "the policy derived from the flows",
                "changed rules",
                diff,
            )
        )
    return out


def node_drift(t: LocalTarget, node_name: str) -> list[DriftFinding]:
    names = t.names
    node = t.topo.nodes[node_name]
    ns = names.node_ns(node_name)
    out: list[DriftFinding] = []
    pid = nodes.nspawn_pid(node_name, names)
    if pid is None:
        state = "netns only" if network.netns_exists(ns) else "absent"
        return [_finding(node_name, "container", "running", state)]
    leader = nodes.leader_pid(pid)
    system = nodes.system_state(pid)
    if system not in ("running",):
        out.append(_finding(node_name, "systemd state", "running", system))
    snap = network.snapshot(ns)
    for iface in node.interfaces:
        if iface.name not in snap.links:
            out.append(_finding(node_name, f"nic {iface.name}", f"{iface.network}", "absent"))
            continue
        if iface.cidr not in snap.addresses.get(iface.name, set()):
            have = ", ".join(sorted(snap.addresses.get(iface.name, set()))) or "none"
            out.append(_finding(node_name, f"nic {iface.name} address", iface.cidr, have))
        if not snap.links[iface.name].up:
            out.append(_finding(node_name, f"nic {iface.name} state", "up", "down"))
    for route in node.routes:
        if ("main", route.destination, route.via, route.dev) not in snap.routes:
            out.append(
                _finding(
                    node_name,
                    f"route {route.destination}",
                    f"via {route.via} dev {route.dev}",
                    "absent",
                )
            )
    if leader is not None:
        live_mounts = _mounts_of(leader)
        for m in t.spec.nodes[node_name].mounts:
            opts = live_mounts.get(m.path)
            if opts is None:
                out.append(_finding(node_name, f"mount {m.path}", f"dataset {m.dataset}", "absent"))
            elif (m.mode == "ro") != ("ro" in opts):
                out.append(
                    _finding(
                        node_name,
                        f"mount {m.path}",
                        m.mode,
                        "ro" if "ro" in opts else "rw",
                    )
                )
    return out


def model_drift(t: LocalTarget) -> list[DriftFinding]:
    """Model files in their datasets against the sha256 the spec pins (named by serving node)."""
    from mlseclab.targets.local.artifacts import pinned_model_files

    out: list[DriftFinding] = []
    for pinned in pinned_model_files(t.spec, t.names.dataset_dir):
        if pinned.matches:
            continue
        found = "absent" if pinned.found is None else f"sha256 {pinned.found[:16]}..."
        for node in t.topo.mounts_of(pinned.dataset) or ("lab",):
            out.append(
                _finding(
                    node,
                    f"model {pinned.name} ({pinned.path})",
                    f"sha256 {pinned.sha256[:16]}... (pinned in the spec)",
                    found,
                )
            )
    return out


def infrastructure_drift(t: LocalTarget, only: list[str] | None = None) -> list[DriftFinding]:
    """Everything that differs between the live lab and the spec (``only``: these nodes)."""
    out: list[DriftFinding] = []
    for ds_name in t.spec.datasets:
        if not t.names.dataset_dir(ds_name).is_dir():
            out.append(_finding("lab", f"dataset {ds_name}", "present", "absent"))
    if not network.link_exists(t.names.host_uplink):
        out.append(_finding("operator", f"uplink {t.names.host_uplink}", "present", "absent"))
    out += [f for f in model_drift(t) if not only or f.node in only]
    out += [f for f in router_drift(t) if not only or f.node in (ROUTER, *only)]
    for node_name in t.topo.nodes:
        if not only or node_name in only:
            out += node_drift(t, node_name)
    return out
