"""The lab's invariants, as plain functions over resource types, inputs and options.

Each ``check_*`` returns the violations it finds (empty: compliant), so tests can
feed them compliant and broken resources without the Pulumi CLI. ``POLICIES``
wraps them for the policy pack. Inputs are camelCase, as the engine sends them.
The type tokens are the provider's (pulumi-proxmoxve 8.x); tests check they
match ``stacks/provider.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

VM = "proxmoxve:index/vmLegacy:VmLegacy"
DIR_MAPPING = "proxmoxve:hardware/mapping/dir:Dir"
FIREWALL_OPTIONS = "proxmoxve:firewall/optionsLegacy:OptionsLegacy"
SDN_VLAN_ZONE = "proxmoxve:sdn/zone/vlan:Vlan"
SDN_VNET = "proxmoxve:sdn/vnet:Vnet"
ACL = "proxmoxve:index/aclLegacy:AclLegacy"

#: Proxmox's SDN zone and vnet id format (pve-sdn-zone-id, pve-sdn-vnet-id), at most 8.
SDN_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9]*[a-zA-Z0-9]")
SDN_ID_MAX = 8
#: A vnet id is its zone id plus the VLAN id in this many digits (stacks/network.py).
VLAN_DIGITS = 4

Props = Mapping[str, Any]
_MARKER = re.compile(r"^mlseclab: (.*)$", re.M)


def _marker(description: str | None) -> dict[str, str]:
    """The ``key=value`` pairs of the machine-readable line the stacks write."""
    m = _MARKER.search(description or "")
    if not m:
        return {}
    return dict(part.split("=", 1) for part in m.group(1).split() if "=" in part)


def _nics(props: Props) -> list[Props]:
    return list(props.get("networkDevices") or [])


def _net_id(nic: Props) -> str:
    vlan = nic.get("vlanId")
    return f"{nic.get('bridge')}/{int(vlan) if vlan is not None else '-'}"


# -- resource rules -------------------------------------------------------------------
def check_vm_firewall_nics(resource_type: str, props: Props) -> list[str]:
    """No VM without the firewall: every NIC has ``firewall`` on."""
    if resource_type != VM:
        return []
    nics = _nics(props)
    if not nics:
        return ["VM has no network device: it cannot be managed or firewalled"]
    return [
        f"net{i} has the Proxmox firewall off; set firewall: true on every NIC"
        for i, nic in enumerate(nics)
        if nic.get("firewall") is not True
    ]


def check_gpu_through_mappings(resource_type: str, props: Props) -> list[str]:
    """GPU only through PCI resource mappings, on q35 + OVMF with an EFI disk."""
    if resource_type != VM:
        return []
    out = []
    hostpcis = list(props.get("hostpcis") or [])
    for h in hostpcis:
        device = h.get("device", "hostpci?")
        if h.get("id"):
            out.append(f"{device} uses a raw PCI id ({h.get('id')}); use a PCI resource mapping")
        if not h.get("mapping"):
            out.append(f"{device} has no PCI resource mapping")
    if hostpcis:
        if props.get("machine") != "q35":
            out.append(f"a VM with a GPU needs machine q35, not {props.get('machine')!r}")
        if props.get("bios") != "ovmf":
            out.append(f"a VM with a GPU needs bios ovmf, not {props.get('bios')!r}")
        if not props.get("efiDisk"):
            out.append("a VM with OVMF needs an efi_disk")
    return out


def check_protected_dataset_retained(resource_type: str, props: Props, protect: bool) -> list[str]:
    """A mapping of a protected dataset is ``protect``ed, so ``down`` leaves it in place."""
    if resource_type != DIR_MAPPING:
        return []
    meta = _marker(f"mlseclab: {props.get('comment') or ''}")
    if meta.get("protect") == "true" and not protect:
        return [
            f"mapping {props.get('name')} exposes protected dataset {meta.get('dataset')} "
            "but is not protected; set protect=True"
        ]
    return []


def check_service_nic(resource_type: str, props: Props) -> list[str]:
    """No service VM on the mgmt segment without a service NIC; nothing on the host's
    management bridge."""
    if resource_type != VM:
        return []
    meta = _marker(props.get("description"))
    if "mgmt-net" not in meta:
        return [
            "VM description lacks the mlseclab marker (mgmt-net=...); cannot tell its mgmt segment"
        ]
    out = []
    host_mgmt = meta.get("host-mgmt-bridge")
    for i, nic in enumerate(_nics(props)):
        if host_mgmt and nic.get("bridge") == host_mgmt:
            out.append(f"net{i} is on the host management bridge {host_mgmt}")
    if meta.get("role") and all(_net_id(n) == meta["mgmt-net"] for n in _nics(props)):
        out.append(
            f"service VM (role {meta['role']}) has only a mgmt NIC "
            f"({meta['mgmt-net']}); give it a NIC on its service segment"
        )
    return out


def check_cloud_init_no_upgrade(resource_type: str, props: Props) -> list[str]:
    """No package upgrade on first boot: the lab has no egress, so cloud-init's apt step
    fails or races Ansible (Proxmox's ciupgrade defaults to 1 when it is not set)."""
    if resource_type != VM:
        return []
    init = props.get("initialization") or {}
    if init.get("upgrade") is not False:
        return ["cloud-init upgrade is not off; set initialization.upgrade: false (ciupgrade 0)"]
    return []


def check_sdn_ids(resource_type: str, props: Props) -> list[str]:
    """SDN zone and vnet ids in Proxmox's format: a letter, letters and digits, at most 8."""
    if resource_type not in (SDN_VLAN_ZONE, SDN_VNET):
        return []
    what = "zone" if resource_type == SDN_VLAN_ZONE else "vnet"
    rid = props.get("resourceId")
    if not isinstance(rid, str):
        return []  # not known yet (preview)
    if len(rid) > SDN_ID_MAX or not SDN_ID.fullmatch(rid):
        return [
            f"SDN {what} id {rid!r} is not a Proxmox SDN id: a letter, then letters and "
            f"digits, at most {SDN_ID_MAX} characters"
        ]
    return []


def check_sdn_acl_propagates(resource_type: str, props: Props) -> list[str]:
    """SDN.Use grants on a bridge or zone propagate: Proxmox checks the vnet or VLAN below."""
    if resource_type != ACL:
        return []
    path = props.get("path")
    if (
        isinstance(path, str)
        and path.startswith("/sdn/zones/")
        and props.get("propagate") is not True
    ):
        return [
            f"ACL on {path} does not propagate; Proxmox checks SDN.Use on the vnet or VLAN "
            "below it, so set propagate: true"
        ]
    return []


# -- stack rules ----------------------------------------------------------------------
def check_vm_firewall_enabled(resources: Iterable[tuple[str, str, Props]]) -> list[tuple[str, str]]:
    """Every VM has firewall options: enabled, input and output policy DROP.

    ``resources`` are (type, name, inputs); returns (resource name, message).
    """
    items = list(resources)
    options: dict[int, Props] = {}
    for typ, _name, props in items:
        if typ == FIREWALL_OPTIONS and props.get("vmId") is not None:
            options[int(props["vmId"])] = props
    out = []
    for typ, name, props in items:
        if typ != VM:
            continue
        vm_id = props.get("vmId")
        opt = options.get(int(vm_id)) if vm_id is not None else None
        if opt is None:
            out.append((name, f"VM {vm_id} has no firewall options: its firewall is off"))
            continue
        if opt.get("enabled") is not True:
            out.append((name, f"VM {vm_id}: firewall not enabled"))
        for key in ("inputPolicy", "outputPolicy"):
            if opt.get(key) != "DROP":
                out.append((name, f"VM {vm_id}: {key} is {opt.get(key)!r}, not DROP"))
    return out


def check_sdn_layout(resources: Iterable[tuple[str, str, Props]]) -> list[tuple[str, str]]:
    """Vnet ids are unique and are their zone's id plus a 4-digit VLAN id (so two labs'
    vnets cannot collide unless their zones do, which Proxmox refuses); ACLs on an SDN zone
    name a zone of this stack.

    ``resources`` are (type, name, inputs); returns (resource name, message).
    """
    items = list(resources)
    zones = {p["resourceId"] for t, _n, p in items if t == SDN_VLAN_ZONE and "resourceId" in p}
    out: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for typ, name, props in items:
        if typ != SDN_VNET or not isinstance(props.get("resourceId"), str):
            continue
        rid, zone = props["resourceId"], props.get("zone")
        if rid in seen:
            out.append((name, f"vnet id {rid} is also used by {seen[rid]}"))
        seen.setdefault(rid, name)
        if isinstance(zone, str):
            tag = props.get("tag")
            expected = f"{zone}{int(tag):0{VLAN_DIGITS}d}" if tag is not None else None
            if rid != expected:
                out.append(
                    (
                        name,
                        f"vnet id {rid} is not its zone id {zone} plus the VLAN id in "
                        f"{VLAN_DIGITS} digits ({expected}); it could collide with another "
                        "lab's vnet",
                    )
                )
    for typ, name, props in items:
        path = props.get("path") if typ == ACL else None
        if not isinstance(path, str) or not path.startswith("/sdn/zones/"):
            continue
        zone = path.split("/")[3]
        if zone != "localnetwork" and zone not in zones:
            out.append(
                (
                    name,
                    f"ACL on {path} names SDN zone {zone}, but the stack creates "
                    f"{', '.join(sorted(zones)) or 'no zone'}",
                )
            )
    return out


# -- the policies -----------------------------------------------------------------------
def _resource_policy(
    name: str, description: str, check: Any, with_protect: bool = False
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        found = (
            check(args.resource_type, args.props, bool(args.opts.protect))
            if with_protect
            else check(args.resource_type, args.props)
        )
        for message in found:
            report(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate)


def _stack_policy(check: Any) -> Any:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        by_name = {r.name: r for r in args.resources}
        for name, message in check((r.resource_type, r.name, r.props) for r in args.resources):
            report(message, by_name[name].urn if name in by_name else None)

    return validate


POLICIES = [
    _resource_policy(
        "vm-firewall-on-every-nic",
        "No VM NIC without the Proxmox firewall.",
        check_vm_firewall_nics,
    ),
    _resource_policy(
        "gpu-only-through-mappings",
        "GPUs only through PCI resource mappings, on q35 + OVMF.",
        check_gpu_through_mappings,
    ),
    _resource_policy(
        "protected-datasets-retained",
        "Mappings of protected datasets are protected from deletion.",
        check_protected_dataset_retained,
        with_protect=True,
    ),
    _resource_policy(
        "service-vm-has-service-nic",
        "No service VM on the mgmt segment only; nothing on the host mgmt bridge.",
        check_service_nic,
    ),
    _resource_policy(
        "vm-cloud-init-no-upgrade",
        "No cloud-init package upgrade on first boot (the lab has no egress).",
        check_cloud_init_no_upgrade,
    ),
    _resource_policy(
        "sdn-ids-proxmox-format",
        "SDN zone and vnet ids match Proxmox's format, at most 8 characters.",
        check_sdn_ids,
    ),
    _resource_policy(
        "sdn-grants-propagate",
        "SDN.Use grants on a bridge or zone propagate to the vnets and VLANs below.",
        check_sdn_acl_propagates,
    ),
    StackValidationPolicy(
        name="vm-firewall-default-drop",
        description="Every VM's firewall is on with input and output DROP.",
        validate=_stack_policy(check_vm_firewall_enabled),
    ),
    StackValidationPolicy(
        name="sdn-ids-derived-from-zone",
        description="Vnet ids are unique, derived from the zone id; SDN ACLs name the lab's zone.",
        validate=_stack_policy(check_sdn_layout),
    ),
]
