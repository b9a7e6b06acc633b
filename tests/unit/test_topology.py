"""Derived topology: addresses, routes, rules and the reachability matrix."""

from __future__ import annotations

import ipaddress

import pytest

from helpers.labs import REFERENCE, load_text, reference_text
from mlseclab.spec import OPERATOR, load_spec
from mlseclab.topology import Topology, derive


@pytest.fixture(scope="module")
def topo() -> Topology:
    return derive(load_spec(REFERENCE))


def cell(topo: Topology, src: str, dst: str, network: str, port: int) -> bool:
    matches = [
        c
        for c in topo.matrix
        if c.source == src and c.destination == dst and c.network == network and c.port == port
    ]
    assert len(matches) == 1, matches
    return matches[0].allowed


def test_interfaces_follow_the_spec(topo: Topology) -> None:
    rag = topo.nodes["rag-01"]
    assert [(i.name, i.network, i.cidr, i.gateway) for i in rag.interfaces] == [
        ("eth0", "mgmt", "10.66.10.14/24", "10.66.10.1"),
        ("eth1", "app", "10.66.50.14/24", "10.66.50.1"),
    ]
    assert rag.mgmt.ip == "10.66.10.14"


def test_no_route_leaves_the_lab(topo: Topology) -> None:
    lab = [ipaddress.IPv4Network(s.cidr) for s in topo.spec.networks.values()]
    lab.append(ipaddress.IPv4Network(topo.spec.lab.local.uplink_cidr))
    for node in topo.nodes.values():
        for route in node.routes:
            assert ipaddress.IPv4Network(route.destination) in lab, (node.name, route)
        assert node.source_for("192.0.2.1") == ""


def test_operator_reaches_mgmt_ssh_through_the_uplink(topo: Topology) -> None:
    rag = topo.nodes["rag-01"]
    assert rag.source_for(topo.operator_address) == rag.mgmt.ip
    for node in topo.nodes:
        assert cell(topo, OPERATOR, node, "mgmt", 22)


@pytest.mark.parametrize(
    ("src", "dst", "network", "port", "allowed"),
    [
        ("gateway-01", "rag-01", "app", 8080, True),
        ("gateway-01", "inference-01", "inference", 8000, True),
        ("rag-01", "inference-01", "inference", 8000, True),
        ("rag-01", "vectordb-01", "data", 5432, True),
        ("obs-01", "vectordb-01", "mgmt", 9100, True),
        ("vectordb-01", "obs-01", "mgmt", 19532, True),
        ("rag-01", "obs-01", "mgmt", 22, False),  # the denied example
        ("rag-01", "inference-01", "mgmt", 22, False),  # same segment: still denied
        ("inference-01", "vectordb-01", "data", 5432, False),
        ("gateway-01", "vectordb-01", "data", 5432, False),
        ("rag-01", "gateway-01", "edge", 443, True),  # `any` includes nodes
        ("gateway-01", "rag-01", "mgmt", 8080, False),  # service flows use service addresses
        ("obs-01", "vectordb-01", "data", 9100, False),  # metrics only over mgmt
    ],
)
def test_matrix_spot_checks(
    topo: Topology, src: str, dst: str, network: str, port: int, allowed: bool
) -> None:
    assert cell(topo, src, dst, network, port) is allowed


def test_matrix_is_complete(topo: Topology) -> None:
    n = len(topo.nodes)
    addresses = sum(len(x.interfaces) for x in topo.nodes.values())
    # every source (nodes + operator) x every other node's address x every probed port
    expected = sum(addresses - len(topo.nodes[s].interfaces) for s in topo.nodes) + addresses
    assert len(topo.matrix) == expected * len(topo.ports)
    assert n == 5
    assert ("tcp", 22) in topo.ports


def test_every_allowed_cell_names_its_flow_and_every_flow_allows_something(topo: Topology) -> None:
    flows = {f.label for f in topo.spec.flows}
    used = {c.flow for c in topo.matrix if c.allowed}
    assert all(c.flow in flows for c in topo.matrix if c.allowed)
    assert used == flows


def test_ingress_and_egress_are_each_others_mirror(topo: Topology) -> None:
    rag_in = {(r.flow, r.port) for r in topo.ingress("rag-01")}
    assert rag_in == {("gateway-to-rag", 8080), ("metrics-scrape", 9100), ("operator-ssh", 22)}
    rag_out = {(r.flow, r.destination) for r in topo.egress("rag-01")}
    assert ("rag-to-vectordb", "vectordb-01") in rag_out
    assert ("rag-to-inference", "inference-01") in rag_out
    assert ("log-shipping", "obs-01") in rag_out
    assert not any(r.destination == "rag-01" for r in topo.egress("rag-01"))


def test_a_node_is_never_its_own_source() -> None:
    topo = derive(load_text(reference_text()))
    for rule in topo.rules:
        assert rule.destination not in rule.sources
        assert not set(rule.source_addresses) & set(rule.destination_addresses)


def test_groups_by_role(topo: Topology) -> None:
    groups = topo.groups()
    assert groups["inference"] == ["inference-01"]
    assert sorted(groups["kind_vm"]) == sorted(topo.nodes)


def test_only_flows_from_any_have_no_source_match(topo: Topology) -> None:
    # metrics-scrape is observability -> all: obs-01 must not become an "any" rule to itself
    for rule in topo.rules:
        if rule.any_source:
            assert rule.flow == "clients-to-gateway"
        else:
            assert rule.sources and rule.source_addresses, rule
    assert not [r for r in topo.rules if r.flow == "metrics-scrape" and r.destination == "obs-01"]
    assert not cell(topo, "gateway-01", "obs-01", "mgmt", 9100)


def test_replies_leave_by_the_nic_the_request_came_in_on(topo: Topology) -> None:
    gw = topo.nodes["gateway-01"]
    by_source = {t.source: t for t in gw.source_tables}
    edge = by_source["10.66.20.11"]
    # the operator (uplink) is reached from the edge address through the edge gateway,
    # so the router's strict reverse-path filter accepts the reply
    assert ("10.66.255.0/30", "10.66.20.1", "eth1") in {
        (r.destination, r.via, r.dev) for r in edge.routes
    }
    mgmt = by_source["10.66.10.11"]
    assert [(r.destination, r.dev) for r in mgmt.routes] == [("10.66.255.0/30", "eth0")]
    assert len({t.table for t in gw.source_tables}) == len(gw.interfaces)


@pytest.mark.parametrize("nodes", [5, 7, 23])
def test_reachability_counts_match_the_matrix(nodes: int) -> None:
    from helpers.bigspec import big_spec_text

    for text in (reference_text(), big_spec_text(nodes)):
        topo = derive(load_text(text))
        assert topo.reachability_counts == (
            sum(1 for c in topo.matrix if c.allowed),
            len(topo.matrix),
        )


def test_validate_counts_without_building_the_matrix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlseclab.cli import main

    def no_matrix(self: Topology) -> None:
        raise AssertionError("validate built the reachability matrix")

    monkeypatch.setattr(Topology, "matrix", property(no_matrix))
    assert main(["validate", str(REFERENCE)]) == 0
    assert "(22 of 350 reachability pairs allowed)" in capsys.readouterr().out
