"""Security properties of a captured Proxmox program, each a function returning problems.

Every check derives what it expects from the spec and ``topology`` on its own
(not through ``stacks/``), compares it with the inputs the mocks captured
(camelCase, numbers as floats) and returns one line per problem: an empty list
means the property holds. Tests run them on real builds, and on deliberately
broken resources to show that each can fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from mlseclab.spec import ANY, OPERATOR, LabSpec, Purpose
from mlseclab.targets.proxmox.offline import CapturedResource
from mlseclab.topology import derive
from stacks import provider

Resources = list[CapturedResource]


def of_type(resources: Iterable[CapturedResource], typ: str) -> Resources:
    return [r for r in resources if r.type == typ]


def vms(resources: Resources) -> dict[str, CapturedResource]:
    """Lab node name -> its VmLegacy."""
    return {r.inputs["name"]: r for r in of_type(resources, provider.VM)}


def _nic_order(spec: LabSpec, node: str) -> list[str]:
    """Segments in NIC order: mgmt first (net0), then the spec's order."""
    nics = spec.nodes[node].nics
    purpose = {n: s.purpose for n, s in spec.networks.items()}
    return [n.network for n in sorted(nics, key=lambda n: purpose[n.network] is not Purpose.MGMT)]


def check_inventory(spec: LabSpec, resources: Resources) -> list[str]:
    """One VM per node, nothing else."""
    found = Counter(r.inputs["name"] for r in of_type(resources, provider.VM))
    problems = [f"{n}: {c} VMs" for n, c in found.items() if c != 1]
    problems += [f"{n}: no VM" for n in spec.nodes if n not in found]
    problems += [f"{n}: VM for no node" for n in found if n not in spec.nodes]
    return problems


def check_vlans(spec: LabSpec, resources: Resources) -> list[str]:
    """Each NIC sits on its segment's VLAN (bridge tag, or an SDN vnet with that tag)."""
    px = spec.lab.proxmox
    assert px is not None
    vnet_tag = {
        r.inputs["resourceId"]: int(r.inputs["tag"]) for r in of_type(resources, provider.SDN_VNET)
    }
    problems = []
    for name, vm in vms(resources).items():
        nics = vm.inputs.get("networkDevices") or []
        segments = _nic_order(spec, name)
        if len(nics) != len(segments):
            problems.append(f"{name}: {len(nics)} NICs, spec has {len(segments)}")
            continue
        for i, (nic, seg) in enumerate(zip(nics, segments, strict=True)):
            want = spec.networks[seg].vlan
            if px.network_mode == "bridge":
                if nic.get("bridge") != px.lab_bridge or nic.get("vlanId") != float(want):
                    problems.append(
                        f"{name}.net{i}: {nic.get('bridge')}/{nic.get('vlanId')}, "
                        f"want {px.lab_bridge}/{want} ({seg})"
                    )
            else:
                if "vlanId" in nic or vnet_tag.get(nic.get("bridge")) != want:
                    problems.append(
                        f"{name}.net{i}: vnet {nic.get('bridge')} tag "
                        f"{vnet_tag.get(nic.get('bridge'))}, want {want} ({seg})"
                    )
    return problems


def check_no_mgmt_bridge(spec: LabSpec, resources: Resources) -> list[str]:
    """Nothing on, or done to, the host's management bridge."""
    px = spec.lab.proxmox
    assert px is not None
    problems = [
        f"{name}: a NIC on {px.mgmt_bridge}"
        for name, vm in vms(resources).items()
        for nic in vm.inputs.get("networkDevices") or []
        if nic.get("bridge") == px.mgmt_bridge
    ]
    problems += [
        f"bridge resource for {px.mgmt_bridge}"
        for r in of_type(resources, provider.BRIDGE)
        if r.inputs.get("name") == px.mgmt_bridge
    ]
    problems += [
        f"SDN zone on {px.mgmt_bridge}"
        for r in of_type(resources, provider.SDN_VLAN_ZONE)
        if r.inputs.get("bridge") == px.mgmt_bridge
    ]
    return problems


def check_nic_firewall(resources: Resources) -> list[str]:
    """The firewall is on for every NIC of every VM."""
    return [
        f"{name}.net{i}: firewall {nic.get('firewall')!r}"
        for name, vm in vms(resources).items()
        for i, nic in enumerate(vm.inputs.get("networkDevices") or [])
        if nic.get("firewall") is not True
    ]


def check_gpu(spec: LabSpec, resources: Resources) -> list[str]:
    """GPU nodes: q35, OVMF, EFI disk, hostpci only by the spec's mapping; others: no hostpci."""
    problems = []
    for name, vm in vms(resources).items():
        gpu = spec.nodes[name].gpu
        hostpcis = vm.inputs.get("hostpcis") or []
        if gpu is None:
            if hostpcis:
                problems.append(f"{name}: hostpci without a GPU in the spec")
            continue
        if vm.inputs.get("machine") != "q35" or vm.inputs.get("bios") != "ovmf":
            problems.append(f"{name}: {vm.inputs.get('machine')}/{vm.inputs.get('bios')}")
        if not vm.inputs.get("efiDisk"):
            problems.append(f"{name}: no EFI disk")
        if len(hostpcis) != gpu.count:
            problems.append(f"{name}: {len(hostpcis)} hostpci, want {gpu.count}")
        for h in hostpcis:
            if h.get("mapping") != gpu.mapping or "id" in h or h.get("pcie") is not True:
                problems.append(f"{name}: hostpci {h}")
    return problems


def _expected_rules(spec: LabSpec) -> tuple[set[tuple[str, ...]], dict[str, set[tuple[str, ...]]]]:
    """(ingress per role, egress per node) from the flows, as comparable tuples."""
    topo = derive(spec)
    mgmt_gw = str(spec.networks[spec.mgmt_segment_name()].gateway_address)
    ingress: set[tuple[str, ...]] = set()
    egress: dict[str, set[tuple[str, ...]]] = {n: set() for n in spec.nodes}
    from_any = {f.label for f in spec.flows if f.from_ == ANY}
    for rule in topo.rules:
        if not rule.source_addresses and rule.flow not in from_any:
            continue  # a flow from X to a set containing X: nobody else to allow
        source = mgmt_gw if rule.sources == (OPERATOR,) else ",".join(rule.source_addresses)
        dest = ",".join(rule.destination_addresses)
        ingress.add((topo.nodes[rule.destination].role, rule.proto, str(rule.port), source, dest))
        for node in spec.nodes:
            if node != rule.destination and (rule.flow in from_any or node in rule.sources):
                egress[node].add((rule.proto, str(rule.port), dest))
    return ingress, egress


def check_flows(spec: LabSpec, resources: Resources) -> list[str]:
    """Exactly the flows are allowed: every flow has its rules and nothing else is accepted.

    Ingress lives in the role groups, egress in each VM's rules; policies are DROP.
    """
    problems: list[str] = []
    want_in, want_out = _expected_rules(spec)
    groups = {r.inputs["name"]: r for r in of_type(resources, provider.SECURITY_GROUP)}
    role_of_group = {}
    for node in spec.nodes.values():
        matches = [
            g
            for g, r in groups.items()
            if r.inputs.get("comment", "").endswith(f"ingress of role {node.role.value}")
        ]
        if len(matches) != 1:
            problems.append(f"role {node.role.value}: {len(matches)} security groups")
            continue
        role_of_group[matches[0]] = node.role.value
    got_in: set[tuple[str, ...]] = set()
    for gname, group in groups.items():
        for rule in group.inputs.get("rules") or []:
            if rule.get("type") != "in" or rule.get("action") != "ACCEPT":
                problems.append(f"group {gname}: unexpected rule {rule}")
                continue
            got_in.add(
                (
                    role_of_group.get(gname, "?"),
                    rule.get("proto"),
                    rule.get("dport"),
                    rule.get("source", ""),
                    rule.get("dest", ""),
                )
            )
    problems += [f"missing ingress {r}" for r in sorted(want_in - got_in)]
    problems += [f"ingress allowed beyond the flows: {r}" for r in sorted(got_in - want_in)]

    vm_by_id = {int(vm.inputs["vmId"]): name for name, vm in vms(resources).items()}
    seen: set[str] = set()
    for res in of_type(resources, provider.FIREWALL_RULES):
        node = vm_by_id.get(int(res.inputs["vmId"]), "?")
        seen.add(node)
        got_out: set[tuple[str, ...]] = set()
        group_refs = []
        for rule in res.inputs.get("rules") or []:
            if "securityGroup" in rule:
                group_refs.append(rule["securityGroup"])
            elif rule.get("type") == "out" and rule.get("action") == "ACCEPT" and rule.get("dest"):
                got_out.add((rule.get("proto"), rule.get("dport"), rule.get("dest")))
            else:
                problems.append(f"{node}: unexpected rule {rule}")
        role = spec.nodes[node].role.value if node in spec.nodes else "?"
        if [role_of_group.get(g) for g in group_refs] != [role]:
            problems.append(f"{node}: group references {group_refs}, want its role {role}")
        want = want_out.get(node, set())
        problems += [f"{node}: missing egress {r}" for r in sorted(want - got_out)]
        problems += [f"{node}: egress beyond the flows {r}" for r in sorted(got_out - want)]
    problems += [f"{n}: no VM firewall rules" for n in spec.nodes if n not in seen]
    labels = {f.label for f in spec.flows}
    covered = {
        r.get("comment", "").removeprefix("flow ")
        for g in groups.values()
        for r in g.inputs.get("rules") or []
    }
    from_any = {f.label for f in spec.flows if f.from_ == ANY}
    resolved = {r.flow for r in derive(spec).rules if r.source_addresses or r.flow in from_any}
    problems += [f"flow {f} has no rule" for f in sorted(labels & resolved - covered)]
    return problems


def check_default_drop(resources: Resources) -> list[str]:
    """Every VM's firewall options: enabled, DROP in and out, IP and MAC filters on."""
    options = {
        int(r.inputs["vmId"]): r.inputs for r in of_type(resources, provider.FIREWALL_OPTIONS)
    }
    problems = []
    for name, vm in vms(resources).items():
        opt = options.get(int(vm.inputs["vmId"]))
        if opt is None:
            problems.append(f"{name}: no firewall options")
            continue
        for key, want in (
            ("enabled", True),
            ("inputPolicy", "DROP"),
            ("outputPolicy", "DROP"),
            ("ipfilter", True),
            ("macfilter", True),
        ):
            if opt.get(key) != want:
                problems.append(f"{name}: {key}={opt.get(key)!r}, want {want!r}")
    return problems


def check_mounts(spec: LabSpec, resources: Resources) -> list[str]:
    """Each mount uses a mapping of its dataset; read-only mounts only the read-only view."""
    mappings = {r.inputs["name"]: r for r in of_type(resources, provider.DIR_MAPPING)}
    problems = []
    for name, vm in vms(resources).items():
        fs = vm.inputs.get("virtiofs") or []
        mounts = spec.nodes[name].mounts
        if len(fs) != len(mounts):
            problems.append(f"{name}: {len(fs)} virtiofs, {len(mounts)} mounts")
            continue
        for entry, mount in zip(fs, mounts, strict=True):
            mapping = mappings.get(entry.get("mapping"))
            if mapping is None:
                problems.append(f"{name}: virtiofs {entry.get('mapping')} has no mapping")
                continue
            comment = mapping.inputs.get("comment", "")
            paths = [m["path"] for m in mapping.inputs.get("maps") or []]
            if f"dataset={mount.dataset} " not in comment:
                problems.append(f"{name}: {mount.path} maps {comment}")
            if mount.mode == "ro" and (
                "mode=ro" not in comment or not all(f"/ro/{mount.dataset}" in p for p in paths)
            ):
                problems.append(
                    f"{name}: read-only {mount.path} uses writable mapping "
                    f"{entry.get('mapping')} ({paths})"
                )
            if entry.get("exposeAcl") or entry.get("exposeXattr"):
                problems.append(f"{name}: {mount.path} exposes ACLs/xattrs")
    return problems


def check_protected(spec: LabSpec, resources: Resources) -> list[str]:
    """Mappings of protected datasets are protected (down keeps them); others are not."""
    problems = []
    for r in of_type(resources, provider.DIR_MAPPING):
        dataset = r.inputs["comment"].split("dataset=", 1)[1].split()[0]
        if r.protect != spec.datasets[dataset].protect:
            problems.append(
                f"{r.inputs['name']}: protect {r.protect}, dataset protect "
                f"{spec.datasets[dataset].protect}"
            )
    return problems


def check_vm_ids(spec: LabSpec, resources: Resources) -> list[str]:
    """VM ids are unique, and the spec's where it gives one."""
    ids = {name: int(vm.inputs["vmId"]) for name, vm in vms(resources).items()}
    problems = [f"vm_id {i} used {c} times" for i, c in Counter(ids.values()).items() if c > 1]
    problems += [
        f"{n}: vm_id {ids.get(n)}, spec says {node.vm_id}"
        for n, node in spec.nodes.items()
        if node.vm_id is not None and ids.get(n) != node.vm_id
    ]
    return problems


def check_cloud_init(spec: LabSpec, resources: Resources, key: str) -> list[str]:
    """Static addresses in NIC order; the gateway only on the service NIC; the lab's key."""
    topo = derive(spec)
    problems = []
    for name, vm in vms(resources).items():
        init: dict[str, Any] = vm.inputs.get("initialization") or {}
        if init.get("userAccount", {}).get("keys") != [key]:
            problems.append(f"{name}: SSH keys {init.get('userAccount', {}).get('keys')}")
        node = topo.nodes[name]
        primary = node.service[0] if node.service else node.mgmt
        configs = init.get("ipConfigs") or []
        for seg, cfg in zip(_nic_order(spec, name), configs, strict=False):
            iface = node.interface_on(seg)
            assert iface is not None
            ipv4 = cfg.get("ipv4", {})
            if ipv4.get("address") != iface.cidr:
                problems.append(f"{name} {seg}: address {ipv4.get('address')}, want {iface.cidr}")
            want_gw = iface.gateway if iface == primary else None
            if ipv4.get("gateway") != want_gw:
                problems.append(f"{name} {seg}: gateway {ipv4.get('gateway')}, want {want_gw}")
        if len(configs) != len(node.interfaces):
            problems.append(f"{name}: {len(configs)} ip configs")
    return problems


def all_problems(spec: LabSpec, resources: Resources, key: str) -> list[str]:
    return [
        *check_inventory(spec, resources),
        *check_vlans(spec, resources),
        *check_no_mgmt_bridge(spec, resources),
        *check_nic_firewall(resources),
        *check_gpu(spec, resources),
        *check_flows(spec, resources),
        *check_default_drop(resources),
        *check_mounts(spec, resources),
        *check_protected(spec, resources),
        *check_vm_ids(spec, resources),
        *check_cloud_init(spec, resources, key),
    ]
