"""What a valid spec implies, derived by pure functions.

Nothing here touches a machine: addresses, routes, the router's inter-segment
policy, each node's ingress and egress, the full reachability matrix and the
inventory groups all come from the spec alone, so every target and every test
derives the same lab from the same file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from mlseclab.spec import ALL, ANY, OPERATOR, Flow, LabSpec, NodeKind, Purpose, Role
from mlseclab.targets.local.router_metrics import METRICS_PORT as ROUTER_METRICS_PORT

SSH_PORT = 22


@dataclass(frozen=True)
class Interface:
    """One NIC of a node as the node sees it."""

    node: str
    index: int
    name: str  # inside the node: eth0, eth1, ...
    network: str
    purpose: Purpose
    ip: str
    prefixlen: int
    gateway: str
    vlan: int

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


@dataclass(frozen=True)
class Route:
    destination: str  # CIDR
    via: str
    dev: str


@dataclass(frozen=True)
class SourceTable:
    """Policy routing: what leaves from ``source`` is routed by its own NIC.

    A node with several NICs answers on the NIC a request came in on; without
    this, a reply from the edge address to the operator would leave by mgmt and
    the router's strict reverse-path filter would (rightly) drop it.
    """

    table: int
    priority: int
    source: str
    routes: tuple[Route, ...]


SOURCE_TABLE_BASE = 100


@dataclass(frozen=True)
class LabNode:
    name: str
    role: str
    kind: NodeKind
    interfaces: tuple[Interface, ...]
    routes: tuple[Route, ...]
    source_tables: tuple[SourceTable, ...] = ()

    @property
    def mgmt(self) -> Interface:
        return next(i for i in self.interfaces if i.purpose is Purpose.MGMT)

    @property
    def service(self) -> tuple[Interface, ...]:
        """The NICs that carry the node's service traffic (all but mgmt)."""
        return tuple(i for i in self.interfaces if i.purpose is not Purpose.MGMT)

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(i.ip for i in self.interfaces)

    def interface_on(self, network: str) -> Interface | None:
        return next((i for i in self.interfaces if i.network == network), None)

    @cached_property
    def _sends_from(self) -> tuple[tuple[ipaddress.IPv4Network, str], ...]:
        """(network, source address) in lookup order: connected segments, then routes."""
        by_dev = {i.name: i.ip for i in self.interfaces}
        connected = [(ipaddress.IPv4Network(i.cidr, strict=False), i.ip) for i in self.interfaces]
        routed = [(ipaddress.IPv4Network(r.destination), by_dev[r.dev]) for r in self.routes]
        return (*connected, *routed)

    def source_for(self, destination: str) -> str:
        """The address this node sends from when it connects to ``destination``."""
        return self.source_for_address(ipaddress.IPv4Address(destination))

    def source_for_address(self, destination: ipaddress.IPv4Address) -> str:
        """:meth:`source_for` of an address already parsed; "" when there is no route."""
        return next((ip for net, ip in self._sends_from if destination in net), "")


@dataclass(frozen=True)
class Rule:
    """One allowed flow, resolved to nodes and addresses."""

    flow: str
    proto: str
    port: int
    sources: tuple[str, ...]  # node names, OPERATOR, or () for any
    source_addresses: tuple[str, ...]  # () means any address
    destination: str  # node name
    destination_addresses: tuple[str, ...]
    network: str | None
    any_source: bool = False  # explicit: an empty source list never means "any"


@dataclass(frozen=True)
class Reachability:
    """One cell of the matrix: can ``source`` open ``proto/port`` on ``address``?"""

    source: str  # node name or OPERATOR
    source_address: str
    destination: str
    address: str
    network: str
    proto: str
    port: int
    allowed: bool
    flow: str | None


#: A rule with its sources and source addresses as sets, for lookups.
_Match = tuple[Rule, frozenset[str], frozenset[str]]


@dataclass(frozen=True)
class Topology:
    spec: LabSpec
    nodes: dict[str, LabNode] = field(hash=False)
    operator_address: str
    router_uplink_address: str

    # -- rules -------------------------------------------------------------
    @cached_property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for flow in self.spec.flows for r in self._resolve(flow))

    def _endpoint_nodes(self, endpoint: str) -> list[str]:
        if endpoint == ALL:
            return list(self.nodes)
        if endpoint in self.nodes:
            return [endpoint]
        return [n.name for n in self.nodes.values() if n.role == endpoint]

    def _resolve(self, flow: Flow) -> Iterable[Rule]:
        if flow.from_ == ANY:
            sources: tuple[str, ...] = ()
            source_addresses: tuple[str, ...] = ()
        elif flow.from_ == OPERATOR:
            sources, source_addresses = (OPERATOR,), (self.operator_address,)
        else:
            sources = tuple(self._endpoint_nodes(flow.from_))
            source_addresses = tuple(a for s in sources for a in self.nodes[s].addresses)
        for dst_name in self._endpoint_nodes(flow.to):
            dst = self.nodes[dst_name]
            targets: tuple[Interface, ...]
            if flow.network is not None:
                iface = dst.interface_on(flow.network)
                targets = (iface,) if iface else ()
            else:
                targets = dst.service or (dst.mgmt,)
            if not targets:
                continue
            own = set(dst.addresses)
            rule_sources = tuple(s for s in sources if s != dst_name)
            if flow.from_ != ANY and not rule_sources:
                continue  # the flow's only source is its destination: nothing to allow
            yield Rule(
                flow=flow.label,
                proto=flow.proto,
                port=flow.port,
                sources=rule_sources,
                source_addresses=tuple(a for a in source_addresses if a not in own),
                destination=dst_name,
                destination_addresses=tuple(t.ip for t in targets),
                network=flow.network,
                any_source=flow.from_ == ANY,
            )

    def ingress(self, node: str) -> tuple[Rule, ...]:
        """Rules whose destination is ``node``: what its firewall lets in."""
        return tuple(r for r in self.rules if r.destination == node)

    def egress(self, node: str) -> tuple[Rule, ...]:
        """Rules ``node`` may use as a client: what its firewall lets out (an observability
        node also scrapes the lab router's drop counters, :meth:`router_scrape`)."""
        flows = tuple(
            r for r in self.rules if r.destination != node and (r.any_source or node in r.sources)
        )
        scrape = self.router_scrape(node)
        return (*flows, scrape) if scrape else flows

    def router_scrape(self, node: str) -> Rule | None:
        """An observability node's scrape of the router's drop counters, on the router's
        management address (the router's input chain admits it; no flow is needed,
        since the router is no node)."""
        n = self.nodes[node]
        if n.role != Role.OBSERVABILITY:
            return None
        mgmt = self.spec.mgmt_segment_name()
        return Rule(
            flow="metrics-scrape-router",
            proto="tcp",
            port=ROUTER_METRICS_PORT,
            sources=(node,),
            source_addresses=(n.mgmt.ip,),
            destination="router",
            destination_addresses=(str(self.spec.networks[mgmt].gateway_address),),
            network=mgmt,
        )

    # -- the matrix ----------------------------------------------------------
    @cached_property
    def ports(self) -> tuple[tuple[str, int], ...]:
        """Every (proto, port) the matrix probes: each flow's, and SSH."""
        found = {(f.proto, f.port) for f in self.spec.flows} | {("tcp", SSH_PORT)}
        return tuple(sorted(found, key=lambda p: (p[1], p[0])))

    @cached_property
    def _rules_at(self) -> dict[tuple[str, int, str], tuple[_Match, ...]]:
        """The rules by (proto, port, destination address), in order, sources as sets."""
        index: dict[tuple[str, int, str], list[_Match]] = {}
        for rule in self.rules:
            match = (rule, frozenset(rule.sources), frozenset(rule.source_addresses))
            for address in dict.fromkeys(rule.destination_addresses):
                index.setdefault((rule.proto, rule.port, address), []).append(match)
        return {key: tuple(matches) for key, matches in index.items()}

    def allowed(
        self, source: str, source_address: str, address: str, proto: str, port: int
    ) -> Rule | None:
        """The first rule that lets ``source`` (from ``source_address``) open the port, if any."""
        for rule, sources, addresses in self._rules_at.get((proto, port, address), ()):
            if rule.any_source or (source in sources and source_address in addresses):
                return rule
        return None

    def _source_address(self, source: str, destination: ipaddress.IPv4Address) -> str:
        if source == OPERATOR:
            return self.operator_address
        return self.nodes[source].source_for_address(destination)

    @cached_property
    def reachability_counts(self) -> tuple[int, int]:
        """(allowed, total) cells of :attr:`matrix`, counted without building it.

        The total is every source (the nodes and the operator) times every other
        node's addresses times the ports. Only the cells some rule could allow are
        visited: per (proto, port, address) of a rule, the sources it names (or,
        for a rule from any, every source that has a route there).
        """
        addresses = sum(len(n.interfaces) for n in self.nodes.values())
        total = len(self.nodes) * addresses * len(self.ports)
        owner = {i.ip: n.name for n in self.nodes.values() for i in n.interfaces}
        everyone = (*self.nodes, OPERATOR)
        allowed = 0
        for (_, _, address), matches in self._rules_at.items():
            dst = owner[address]
            parsed = ipaddress.IPv4Address(address)
            if any(rule.any_source for rule, _, _ in matches):
                candidates: Iterable[str] = everyone
            else:
                candidates = dict.fromkeys(s for rule, _, _ in matches for s in rule.sources)
            allowed += sum(
                1
                for src in candidates
                if src != dst
                and (src_addr := self._source_address(src, parsed))
                and any(
                    rule.any_source or (src in sources and src_addr in addrs)
                    for rule, sources, addrs in matches
                )
            )
        return allowed, total

    @cached_property
    def matrix(self) -> tuple[Reachability, ...]:
        """Every source (each node and the operator) to every node address and port."""
        cells: list[Reachability] = []
        sources = [*self.nodes, OPERATOR]
        for src in sources:
            for dst in self.nodes.values():
                if src == dst.name:
                    continue
                for iface in dst.interfaces:
                    src_addr = self._source_address(src, ipaddress.IPv4Address(iface.ip))
                    for proto, port in self.ports:
                        rule = (
                            self.allowed(src, src_addr, iface.ip, proto, port) if src_addr else None
                        )
                        cells.append(
                            Reachability(
                                source=src,
                                source_address=src_addr,
                                destination=dst.name,
                                address=iface.ip,
                                network=iface.network,
                                proto=proto,
                                port=port,
                                allowed=rule is not None,
                                flow=rule.flow if rule else None,
                            )
                        )
        return tuple(cells)

    # -- datasets ------------------------------------------------------------
    def mounts_of(self, dataset: str, *, writers_only: bool = False) -> tuple[str, ...]:
        """The nodes that mount ``dataset`` (read-write only, with ``writers_only``).

        :meth:`mlseclab.spec.LabSpec.mounts_of`, which validation uses before a
        topology exists.
        """
        return self.spec.mounts_of(dataset, writers_only=writers_only)

    # -- inventory -----------------------------------------------------------
    def groups(self) -> dict[str, list[str]]:
        """Inventory groups: one per role, one per (spec) kind, and the lab itself."""
        out: dict[str, list[str]] = {}
        for node in self.nodes.values():
            out.setdefault(node.role, []).append(node.name)
            out.setdefault(f"kind_{node.kind.value}", []).append(node.name)
        return dict(sorted(out.items()))


def _gateway(spec: LabSpec, network: str) -> str:
    return str(spec.networks[network].gateway_address)


def _source_tables(
    spec: LabSpec, interfaces: list[Interface], uplink: str
) -> tuple[SourceTable, ...]:
    """One routing table per NIC for traffic from that NIC's address (see SourceTable)."""
    tables = []
    for iface in interfaces:
        routes: tuple[Route, ...]
        if iface.purpose is Purpose.MGMT:
            # from mgmt: its own segment (connected) and the operator, nothing else
            routes = (Route(uplink, iface.gateway, iface.name),)
        else:
            routes = tuple(
                Route(dest, iface.gateway, iface.name)
                for dest in [
                    uplink,
                    *(s.cidr for n, s in spec.networks.items() if n != iface.network),
                ]
            )
        tables.append(
            SourceTable(SOURCE_TABLE_BASE + iface.index, 1000 + iface.index, iface.ip, routes)
        )
    return tuple(tables)


def derive(spec: LabSpec) -> Topology:
    """The topology a valid spec describes."""
    uplink = ipaddress.IPv4Network(spec.lab.local.uplink_cidr)
    # the uplink is a validated /30: its first host is the operator's, its last the router's.
    # Derived arithmetically: a network is never enumerated (a /1 would be 2^31 addresses).
    operator = uplink.network_address + 1
    router = uplink.broadcast_address - 1
    nodes: dict[str, LabNode] = {}
    for name, node in spec.nodes.items():
        interfaces = []
        for i, nic in enumerate(node.nics):
            seg = spec.networks[nic.network]
            interfaces.append(
                Interface(
                    node=name,
                    index=i,
                    name=f"eth{i}",
                    network=nic.network,
                    purpose=seg.purpose,
                    ip=nic.ip,
                    prefixlen=seg.network.prefixlen,
                    gateway=_gateway(spec, nic.network),
                    vlan=seg.vlan,
                )
            )
        mgmt = next(i for i in interfaces if i.purpose is Purpose.MGMT)
        service = next((i for i in interfaces if i.purpose is not Purpose.MGMT), mgmt)
        connected = {i.network for i in interfaces}
        routes = [Route(str(uplink), mgmt.gateway, mgmt.name)]
        for seg_name, seg in spec.networks.items():
            if seg_name not in connected:
                routes.append(Route(seg.cidr, service.gateway, service.name))
        nodes[name] = LabNode(
            name=name,
            role=node.role.value,
            kind=node.kind,
            interfaces=tuple(interfaces),
            routes=tuple(routes),
            source_tables=_source_tables(spec, interfaces, str(uplink)),
        )
    return Topology(
        spec=spec, nodes=nodes, operator_address=str(operator), router_uplink_address=str(router)
    )
