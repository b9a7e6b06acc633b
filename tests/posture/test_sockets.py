"""The exact set of listening sockets of each node (CIS 2.1.23 "only approved services").

Approved = every (proto, address, port) a flow of the spec lets into this node
(``Topology.ingress``: its service ports, SSH from the operator, the metrics
scrape, log shipping) plus the few sockets a role opens for local use only,
listed below with their reason. Nothing else may listen, on any address,
TCP or UDP, IPv4 or IPv6; and each approved socket must be there, or a flow of
the spec leads nowhere.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlseclab.posture.plugin import PostureLab, PostureNode, not_applicable
from mlseclab.spec import ALL, ANY, OPERATOR
from mlseclab.topology import Interface
from posture.nodeinfo import gather, last_assignments, ok

# Sockets a role opens that no flow reaches, by role: (proto, network purpose, port, why).
ROLE_LOCAL_SOCKETS: dict[str, list[tuple[str, str, int, str]]] = {
    "observability": [
        (
            "tcp",
            "mgmt",
            9090,
            "Prometheus' own UI and API on the management address (roles/observability); "
            "no flow reaches it, so only the node itself can",
        ),
        (
            "tcp",
            "mgmt",
            9093,
            "Alertmanager's API on the management address (roles/observability): Prometheus "
            "on this node sends to it, `mlseclab attack` reads it over SSH; no flow reaches it",
        ),
    ],
}

# A role whose service may not be installed yet: its unit, and why. While the unit is
# neither enabled nor active, the role's service sockets (those off the management
# network) are reported not applicable, by name; every other socket is still required.
# Empty: every role's service is installed (rag-01 listens on its app address :8080).
DEFERRED_SERVICES: dict[str, tuple[str, str]] = {}

Socket = tuple[str, str, int]  # proto, address, port


def _members(lab: PostureLab, endpoint: str) -> set[str]:
    if endpoint == ALL:
        return set(lab.topology.nodes)
    if endpoint in lab.topology.nodes:
        return {endpoint}
    return {n.name for n in lab.topology.nodes.values() if n.role == endpoint}


def approved_sockets(lab: PostureLab, node: PostureNode) -> dict[Socket, str]:
    """Every socket this node should listen on, with the flow or reason that approves it."""
    out: dict[Socket, str] = {}
    for rule in lab.topology.ingress(node.name):
        for address in rule.destination_addresses:
            out[(rule.proto, address, rule.port)] = f"flow {rule.flow}"
    # A flow whose only source is this node itself (observability scraping "all", itself
    # included) has no firewall rule here, but its service still listens for local use.
    for flow in lab.spec.flows:
        if flow.from_ in (ANY, OPERATOR) or _members(lab, flow.from_) != {node.name}:
            continue
        if node.name not in _members(lab, flow.to):
            continue
        targets: tuple[Interface, ...]
        if flow.network is not None:
            iface = node.topo.interface_on(flow.network)
            targets = (iface,) if iface else ()
        else:
            targets = node.topo.service or (node.topo.mgmt,)
        for t in targets:
            out.setdefault(
                (flow.proto, t.ip, flow.port), f"flow {flow.label} (from this node to itself)"
            )
    for proto, purpose, port, why in ROLE_LOCAL_SOCKETS.get(node.role, []):
        for iface in node.topo.interfaces:
            if iface.purpose.value == purpose:
                out[(proto, iface.ip, port)] = why
    return out


def listening(host: Any) -> dict[Socket, str]:
    """``ss -Htulnp``: (proto, address, port) -> the processes holding it."""
    return parse_ss(ok(gather(host, ss="ss -Htulnp")["ss"], "ss -Htulnp"))


def parse_ss(text: str) -> dict[Socket, str]:
    out: dict[Socket, str] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 5:
            continue
        proto, local = words[0], words[4]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%", 1)[0]
        process = " ".join(words[6:]) if len(words) > 6 else ""
        out[(proto, address, int(port))] = process
    return out


def _show(sock: Socket) -> str:
    proto, address, port = sock
    return f"{proto} {address}:{port}"


@pytest.mark.control("MLSL-NET-04", cis="2.1.23", atlas="AML.T0049, AML.T0006")
def test_only_approved_sockets_listen(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Nothing listens but the sockets the spec's flows (and the role's local sockets) approve."""
    approved = approved_sockets(lab, node)
    live = listening(host)
    extra = [
        f"{_show(s)} ({live[s] or 'unknown process'})" for s in sorted(live) if s not in approved
    ]
    assert not extra, f"{node.name}: {len(extra)} unapproved listening sockets: " + "; ".join(extra)


@pytest.mark.control("MLSL-NET-05", cis="2.1.23")
def test_every_approved_socket_listens(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Every socket a flow (or the role) approves on this node is listening."""
    approved = approved_sockets(lab, node)
    deferred = DEFERRED_SERVICES.get(node.role)
    out = gather(
        host,
        ss="ss -Htulnp",
        unit=f"systemctl show -p UnitFileState -p ActiveState {deferred[0]}"
        if deferred
        else "true",
    )
    live = parse_ss(ok(out["ss"], "ss -Htulnp"))
    missing = {s: why for s, why in sorted(approved.items()) if s not in live}
    waiting: list[str] = []
    if deferred:
        unit = last_assignments(out["unit"].text)
        if unit.get("UnitFileState") != "enabled" and unit.get("ActiveState") != "active":
            mgmt = node.topo.mgmt.ip
            waiting = [f"{_show(s)} ({why})" for s, why in missing.items() if s[1] != mgmt]
            missing = {s: why for s, why in missing.items() if s[1] == mgmt}
    wrong = [f"{_show(s)} ({why})" for s, why in missing.items()]
    assert not wrong, f"{node.name}: approved but not listening: " + "; ".join(wrong)
    if waiting:
        not_applicable(
            f"{deferred[0] if deferred else ''} is not enabled, so nothing serves "
            f"{', '.join(waiting)}: {deferred[1] if deferred else ''}"
        )
