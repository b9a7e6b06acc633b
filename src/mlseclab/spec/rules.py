"""The whole-lab rules: what only the whole lab can tell (overlapping networks, addresses
outside their network, flows to roles that have no node), checked after pydantic has
checked each field on its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from mlseclab import alphabets as ab
from mlseclab.ml.catalog import BUILTIN_SHA256
from mlseclab.spec.messages import one_of, suggest
from mlseclab.spec.schema import (
    ALL,
    CERT_NAME_MAX,
    DNS_LABEL,
    MACHINE_NAME_MAX,
    SEGMENT_NAME,
    SPECIAL_DESTINATIONS,
    SPECIAL_SOURCES,
    Engine,
    LabSpec,
    NodeKind,
    Purpose,
    Role,
)
from mlseclab.yamlsource import Path


def check_rules(spec: LabSpec, target: str | None = None) -> Iterator[tuple[Path, str]]:
    """Yield (path, message) for every whole-lab rule the spec breaks on ``target``
    (default: ``lab.target``; the CLI passes ``--target`` or the recorded one)."""
    yield from target_problems(spec, target or spec.lab.target)
    yield from _check_networks(spec)
    yield from _check_nodes(spec)
    yield from _check_flows(spec)
    yield from _check_models(spec)
    yield from _check_engines(spec)
    yield from _check_clients(spec)
    yield from _check_posture(spec)
    if spec.lab.target == "proxmox" and spec.lab.proxmox is None:
        yield (
            ("lab", "target"),
            "target proxmox needs a lab.proxmox section (endpoint, nodes, template)",
        )


def target_problems(spec: LabSpec, target: str) -> Iterator[tuple[Path, str]]:
    """What the chosen target cannot build: containers exist on the local target only."""
    if target != "proxmox":
        return
    for name, node in spec.nodes.items():
        if node.kind is NodeKind.CONTAINER:
            yield (
                ("nodes", name, "kind"),
                (
                    f"{name} is a container on target proxmox; containers are a local-target "
                    "feature (Proxmox builds every node as a VM), use kind: vm"
                ),
            )


#: The uplink is a point-to-point transit link: exactly two host addresses.
UPLINK_PREFIX = 30
#: The largest segment: /16 (65534 hosts) is far more than a lab has nodes. A shorter prefix
#: only widens what the host routes into the lab (a /1 would capture half of IPv4).
MAX_SEGMENT_PREFIX = 16


def _check_networks(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    seen_vlan: dict[int, str] = {}
    items = list(spec.networks.items())
    for name, seg in items:
        if not SEGMENT_NAME.match(name):
            yield (
                ("networks", name),
                (
                    f"{name!r} is not a segment name; use 1-12 lowercase letters, digits and "
                    "'-', starting with a letter (its bridge br-<name> is an interface name of "
                    "at most 15 characters), e.g. inference"
                ),
            )
        if seg.vlan in seen_vlan:
            yield (
                ("networks", name, "vlan"),
                (
                    f"VLAN id {seg.vlan} is already used by network {seen_vlan[seg.vlan]}; "
                    "each segment needs its own VLAN id"
                ),
            )
        seen_vlan.setdefault(seg.vlan, name)
        if seg.network.prefixlen > 29:
            yield (
                ("networks", name, "cidr"),
                (f"{seg.cidr} is too small for a segment; use a prefix of /29 or shorter"),
            )
        elif seg.network.prefixlen < MAX_SEGMENT_PREFIX:
            yield (
                ("networks", name, "cidr"),
                (
                    f"{seg.cidr} is too large for a segment; use a prefix of "
                    f"/{MAX_SEGMENT_PREFIX} or longer (up to 65534 hosts), "
                    f"e.g. {seg.network.network_address}/{MAX_SEGMENT_PREFIX}"
                ),
            )
        if seg.gateway is not None:
            gw = ipaddress.IPv4Address(seg.gateway)
            if gw not in seg.network or gw in (
                seg.network.network_address,
                seg.network.broadcast_address,
            ):
                yield (
                    ("networks", name, "gateway"),
                    (
                        f"{seg.gateway} is not a host address of {name} ({seg.cidr}); "
                        "use one inside it, or leave gateway out (the first host)"
                    ),
                )
    for i, (name_a, seg_a) in enumerate(items):
        for name_b, seg_b in items[i + 1 :]:
            if seg_a.network.overlaps(seg_b.network):
                yield (
                    ("networks", name_b, "cidr"),
                    (
                        f"{seg_b.cidr} overlaps network {name_a} ({seg_a.cidr}); "
                        "segments need disjoint CIDRs"
                    ),
                )
    uplink = ipaddress.IPv4Network(spec.lab.local.uplink_cidr)
    if uplink.prefixlen != UPLINK_PREFIX:
        transit = ipaddress.IPv4Network((uplink.network_address, UPLINK_PREFIX), strict=False)
        yield (
            ("lab", "local", "uplink_cidr"),
            (
                f"{uplink} is a /{uplink.prefixlen}, but the uplink is a transit link with "
                f"exactly two host addresses (the host and the router); "
                f"use a /{UPLINK_PREFIX}, e.g. {transit}"
            ),
        )
    for name, seg in items if uplink.prefixlen == UPLINK_PREFIX else ():
        if uplink.overlaps(seg.network):
            yield (
                ("lab", "local", "uplink_cidr"),
                (
                    f"{uplink} overlaps network {name} ({seg.cidr}); "
                    "choose a transit /30 outside the lab"
                ),
            )
    mgmt = [n for n, s in items if s.purpose is Purpose.MGMT]
    if len(mgmt) != 1:
        yield (
            ("networks",),
            (
                f"the lab needs exactly one network with purpose mgmt, found {len(mgmt)}"
                + (f" ({', '.join(mgmt)}); keep purpose mgmt on one" if mgmt else "; add one")
            ),
        )


def _check_nodes(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    seen_ip: dict[ipaddress.IPv4Address, str] = {}
    seen_vmid: dict[int, str] = {}
    mgmt_names = {n for n, s in spec.networks.items() if s.purpose is Purpose.MGMT}
    for name, node in spec.nodes.items():
        base: Path = ("nodes", name)
        if not DNS_LABEL.match(name):
            yield (
                base,
                (
                    f"{name!r} is not a node name; "
                    "use lowercase letters, digits and '-' (a DNS label)"
                ),
            )
        if name in SPECIAL_SOURCES or name in {r.value for r in Role}:
            yield base, f"{name!r} is reserved (a role or a flow keyword); choose another node name"
        fqdn = f"{name}.{spec.lab.domain}"
        if len(fqdn) > CERT_NAME_MAX:
            yield (
                base,
                (
                    f"{fqdn} is {len(fqdn)} characters, over the {CERT_NAME_MAX} a certificate's "
                    "common name holds; shorten the node name or lab.domain"
                ),
            )
        machine = f"{spec.lab.name}-{name}"
        if len(machine) > MACHINE_NAME_MAX:
            yield (
                base,
                (
                    f"the node's machine name {machine} is {len(machine)} characters, over the "
                    f"{MACHINE_NAME_MAX} systemd allows; shorten the node or lab name"
                ),
            )
        if node.vm_id is not None:
            if node.vm_id in seen_vmid:
                yield (
                    (*base, "vm_id"),
                    f"vm_id {node.vm_id} is already used by {seen_vmid[node.vm_id]}; "
                    "give each node its own vm_id",
                )
            seen_vmid.setdefault(node.vm_id, name)
        nets_seen: set[str] = set()
        for i, nic in enumerate(node.nics):
            where: Path = (*base, "nics", i)
            seg = spec.networks.get(nic.network)
            if seg is None:
                yield (
                    (*where, "network"),
                    (
                        f"unknown network {nic.network!r}; declared: {one_of(spec.networks)}"
                        + suggest(nic.network, spec.networks)
                    ),
                )
                continue
            if nic.network in nets_seen:
                yield (*where, "network"), f"{name} has two NICs on {nic.network}; give it one"
            nets_seen.add(nic.network)
            addr = ipaddress.IPv4Address(nic.ip)
            net = seg.network
            if addr not in net:
                yield (
                    (*where, "ip"),
                    f"{nic.ip} is outside network {nic.network} ({seg.cidr}); use one inside it",
                )
                continue
            which = "network" if addr == net.network_address else "broadcast"
            if addr in (net.network_address, net.broadcast_address):
                yield (
                    (*where, "ip"),
                    (
                        f"{nic.ip} is the {which} address of {nic.network} ({seg.cidr}); "
                        "use a host address"
                    ),
                )
            elif addr == seg.gateway_address:
                yield (
                    (*where, "ip"),
                    (f"{nic.ip} is the gateway of {nic.network}; the router owns it, use another"),
                )
            elif addr in seen_ip:
                yield (
                    (*where, "ip"),
                    f"{nic.ip} is already used by {seen_ip[addr]}; give each NIC its own address",
                )
            seen_ip.setdefault(addr, f"{name}.nics[{i}]")
        if mgmt_names and not nets_seen & mgmt_names:
            yield (
                (*base, "nics"),
                (
                    f"{name} has no NIC on the mgmt network ({one_of(mgmt_names)}); "
                    "every node is managed over mgmt, add one"
                ),
            )
        if node.gpu is not None and node.kind is not NodeKind.VM:
            yield (
                (*base, "gpu"),
                (f"a GPU needs a VM: {name} is a container; set kind: vm or remove gpu"),
            )
        if "engine" in node.model_fields_set and node.role is not Role.INFERENCE:
            yield (
                (*base, "engine"),
                f"engine applies to inference nodes only: {name} is a {node.role}; remove engine",
            )
        elif node.engine is Engine.VLLM and (node.kind is not NodeKind.VM or node.gpu is None):
            what = "is a container" if node.kind is not NodeKind.VM else "has no gpu"
            yield (
                (*base, "engine"),
                (
                    f"engine vllm needs a VM with an NVIDIA GPU: {name} {what}; "
                    "set kind: vm and a gpu mapping, or use engine llama_cpp"
                ),
            )
        paths: set[str] = set()
        for i, mount in enumerate(node.mounts):
            where = (*base, "mounts", i)
            if mount.dataset not in spec.datasets:
                yield (
                    (*where, "dataset"),
                    (
                        f"undeclared dataset {mount.dataset!r}; declared: {one_of(spec.datasets)}"
                        + suggest(mount.dataset, spec.datasets)
                    ),
                )
            if mount.path in paths:
                yield (
                    (*where, "path"),
                    f"{mount.path} is mounted twice on {name}; give each mount its own path",
                )
            paths.add(mount.path)
    for name in spec.datasets:
        if not DNS_LABEL.match(name):
            yield ("datasets", name), f"{name!r} is not a dataset name; use a DNS label"


def endpoint_choices(spec: LabSpec, *, source: bool) -> set[str]:
    roles = {n.role.value for n in spec.nodes.values()}
    return roles | set(spec.nodes) | set(SPECIAL_SOURCES if source else SPECIAL_DESTINATIONS)


def _check_flows(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    declared_roles = {r.value for r in Role}
    for i, flow in enumerate(spec.flows):
        base: Path = ("flows", i)
        for key, value, source in (("from", flow.from_, True), ("to", flow.to, False)):
            valid = endpoint_choices(spec, source=source)
            if value in valid:
                continue
            if value in declared_roles:
                what = f"flow to role {value!r}, which no node has"
            elif value in SPECIAL_SOURCES:
                what = f"{value!r} can only be a source"
            else:
                what = f"unknown role or node {value!r}"
            yield (*base, key), f"{what}; valid: {one_of(valid)}" + suggest(value, valid)
        if flow.name is None and not ab.NFT_COMMENT.fullmatch(flow.label):
            yield (
                base,
                (
                    f"the flow's label {flow.label} is {len(flow.label)} characters, over the "
                    f"{ab.FLOW_LABEL_MAX} a firewall comment holds; give the flow a name"
                ),
            )
        if flow.network is not None and flow.network not in spec.networks:
            yield (
                (*base, "network"),
                (
                    f"unknown network {flow.network!r}; declared: {one_of(spec.networks)}"
                    + suggest(flow.network, spec.networks)
                ),
            )


def _check_models(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    for name, model in spec.models.items():
        base: Path = ("models", name)
        if not ab.MODEL_NAME.fullmatch(name):
            yield (
                base,
                (
                    f"{ab.shown(name)} is not a model name; use up to 64 letters, digits, '.', "
                    "'_' and '-', starting and ending with a letter or digit, e.g. gemma-3-270m"
                ),
            )
        if model.dataset not in spec.datasets:
            yield (
                (*base, "dataset"),
                (
                    f"undeclared dataset {model.dataset!r}; declared: {one_of(spec.datasets)}"
                    + suggest(model.dataset, spec.datasets)
                ),
            )
        if model.source.startswith("builtin:"):
            builtin = model.source.removeprefix("builtin:")
            if builtin not in BUILTIN_SHA256:
                yield (
                    (*base, "source"),
                    (
                        f"unknown built-in model {builtin!r}; built-in: {one_of(BUILTIN_SHA256)}"
                        + suggest(builtin, BUILTIN_SHA256)
                    ),
                )
            elif BUILTIN_SHA256[builtin] != model.sha256:
                yield (
                    (*base, "sha256"),
                    (
                        f"does not match the pinned sha256 of builtin:{builtin} "
                        f"({BUILTIN_SHA256[builtin]}); a different file is a different model"
                    ),
                )
    if spec.models:
        serving = [n for n, node in spec.nodes.items() if node.role is Role.INFERENCE]
        for name, model in spec.models.items():
            mounting = spec.mounts_of(model.dataset)
            for node in serving:
                if node not in mounting:
                    yield (
                        ("nodes", node, "mounts"),
                        (
                            f"{node} serves model {name} but does not mount dataset "
                            f"{model.dataset}; add {{dataset: {model.dataset}, "
                            f"path: /srv/{model.dataset}, mode: ro}}"
                        ),
                    )


ENGINE_LOADS = {
    Engine.LLAMA_CPP: "GGUF files only (builtin:<name> or file:/path/model.gguf)",
    Engine.VLLM: "one safetensors model directory (file:/path/model/)",
}


def _check_engines(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    """Every inference node's engine loads the format of every model, and vLLM serves one."""
    for node_name, node in spec.nodes.items():
        if node.role is not Role.INFERENCE:
            continue
        for name, model in spec.models.items():
            if model.engine is not node.engine:
                yield (
                    ("models", name, "source"),
                    (
                        f"{node_name} serves with engine {node.engine}, which loads "
                        f"{ENGINE_LOADS[node.engine]}; set nodes.{node_name}.engine: "
                        f"{model.engine} or change the model"
                    ),
                )
        if node.engine is Engine.VLLM and len(spec.models) != 1:
            yield (
                ("nodes", node_name, "engine"),
                (
                    f"engine vllm serves one model per node and the spec declares "
                    f"{len(spec.models)}; declare one model or use engine llama_cpp"
                ),
            )


def _check_clients(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    """Client names become key file names, nginx map keys and the principal the gateway signs."""
    for name in spec.clients:
        if not ab.DNS_LABEL.fullmatch(name):
            yield (
                ("clients", name),
                (
                    f"{ab.shown(name)} is not a client name; use up to 63 lowercase letters, "
                    "digits and '-', starting with a letter, e.g. rag-app"
                ),
            )


def _check_posture(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    for i, waiver in enumerate(spec.posture.waivers):
        for j, node in enumerate(waiver.nodes):
            if node != ALL and node not in spec.nodes:
                yield (
                    ("posture", "waivers", i, "nodes", j),
                    (
                        f"unknown node {node!r}; declared: {one_of(spec.nodes)}"
                        + suggest(node, spec.nodes)
                    ),
                )
