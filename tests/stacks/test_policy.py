"""The policy pack's rules on compliant resources (the reference build) and on violating ones."""

from __future__ import annotations

import copy

import pytest
from policy import rules

from mlseclab.spec import LabSpec
from mlseclab.targets.proxmox.offline import CapturedResource, capture
from stacks import provider

Resources = list[CapturedResource]


def _vm(resources: Resources, name: str) -> dict[str, object]:
    return copy.deepcopy(
        next(r.inputs for r in resources if r.type == provider.VM and r.inputs["name"] == name)
    )


def test_type_tokens_match_the_provider_module() -> None:
    assert rules.VM == provider.VM
    assert rules.DIR_MAPPING == provider.DIR_MAPPING
    assert rules.FIREWALL_OPTIONS == provider.FIREWALL_OPTIONS


def test_policy_names_are_unique() -> None:
    names = [p.name for p in rules.POLICIES]
    assert len(names) == len(set(names)) == 9


def test_reference_build_is_compliant(reference_resources: Resources) -> None:
    for r in reference_resources:
        assert rules.check_vm_firewall_nics(r.type, r.inputs) == []
        assert rules.check_gpu_through_mappings(r.type, r.inputs) == []
        assert rules.check_protected_dataset_retained(r.type, r.inputs, r.protect) == []
        assert rules.check_service_nic(r.type, r.inputs) == []
        assert rules.check_sdn_ids(r.type, r.inputs) == []
        assert rules.check_sdn_acl_propagates(r.type, r.inputs) == []
        assert rules.check_cloud_init_no_upgrade(r.type, r.inputs) == []
    stack = [(r.type, r.name, r.inputs) for r in reference_resources]
    assert rules.check_vm_firewall_enabled(stack) == []
    assert rules.check_sdn_layout(stack) == []


def test_nic_without_firewall_violates(reference_resources: Resources) -> None:
    vm = _vm(reference_resources, "gateway-01")
    vm["networkDevices"][0]["firewall"] = False  # type: ignore[index]
    assert rules.check_vm_firewall_nics(rules.VM, vm) == [
        "net0 has the Proxmox firewall off; set firewall: true on every NIC"
    ]
    assert rules.check_vm_firewall_nics(rules.VM, {"networkDevices": []})


def test_vm_without_firewall_options_violates(reference_resources: Resources) -> None:
    stack = [
        (r.type, r.name, r.inputs)
        for r in reference_resources
        if not (r.type == provider.FIREWALL_OPTIONS and r.inputs["vmId"] == 6613.0)
    ]
    assert [m for _n, m in rules.check_vm_firewall_enabled(stack)] == [
        "VM 6613.0 has no firewall options: its firewall is off"
    ]


def test_accepting_policy_violates(reference_resources: Resources) -> None:
    stack = []
    for r in reference_resources:
        inputs = dict(r.inputs)
        if r.type == provider.FIREWALL_OPTIONS and inputs["vmId"] == 6611.0:
            inputs["inputPolicy"] = "ACCEPT"
        stack.append((r.type, r.name, inputs))
    assert len(rules.check_vm_firewall_enabled(stack)) == 1


@pytest.mark.parametrize(
    "hostpci, machine, bios",
    [
        ({"device": "hostpci0", "id": "0000:01:00.0", "pcie": True}, "q35", "ovmf"),
        ({"device": "hostpci0", "mapping": "gpu-inference", "pcie": True}, "pc", "ovmf"),
        ({"device": "hostpci0", "mapping": "gpu-inference", "pcie": True}, "q35", "seabios"),
    ],
)
def test_gpu_outside_a_mapping_or_q35_ovmf_violates(
    reference_resources: Resources, hostpci: dict[str, object], machine: str, bios: str
) -> None:
    vm = _vm(reference_resources, "inference-01")
    vm.update(hostpcis=[hostpci], machine=machine, bios=bios)
    assert rules.check_gpu_through_mappings(rules.VM, vm)


def test_unprotected_mapping_of_protected_dataset_violates(reference_resources: Resources) -> None:
    models = next(
        r
        for r in reference_resources
        if r.type == provider.DIR_MAPPING and "dataset=models " in r.inputs["comment"]
    )
    assert models.protect
    assert rules.check_protected_dataset_retained(rules.DIR_MAPPING, models.inputs, False)
    logs = next(
        r
        for r in reference_resources
        if r.type == provider.DIR_MAPPING and "dataset=logs " in r.inputs["comment"]
    )
    assert rules.check_protected_dataset_retained(rules.DIR_MAPPING, logs.inputs, False) == []


def test_service_vm_with_only_a_mgmt_nic_violates(reference_resources: Resources) -> None:
    vm = _vm(reference_resources, "rag-01")
    vm["networkDevices"] = vm["networkDevices"][:1]  # type: ignore[index]
    assert rules.check_service_nic(rules.VM, vm) == [
        "service VM (role rag) has only a mgmt NIC (vmbr1/10); give it a NIC on its service segment"
    ]


def test_nic_on_host_mgmt_bridge_violates(reference_resources: Resources) -> None:
    vm = _vm(reference_resources, "rag-01")
    vm["networkDevices"][1]["bridge"] = "vmbr0"  # type: ignore[index]
    assert rules.check_service_nic(rules.VM, vm) == ["net1 is on the host management bridge vmbr0"]


def test_vm_without_marker_violates() -> None:
    assert rules.check_service_nic(rules.VM, {"networkDevices": [{"bridge": "vmbr1"}]})


# -- SDN ids and grants (review F5, F6) -------------------------------------------------------
def test_sdn_type_tokens_match_the_provider_module() -> None:
    assert rules.SDN_VLAN_ZONE == provider.SDN_VLAN_ZONE
    assert rules.SDN_VNET == provider.SDN_VNET
    assert rules.ACL == provider.ACL


@pytest.mark.parametrize("rid", ["mls-ee19", "mlsl_1", "1mlsl", "mlslab0110", "m"])
def test_sdn_id_outside_proxmox_format_violates(rid: str) -> None:
    assert rules.check_sdn_ids(rules.SDN_VNET, {"resourceId": rid})
    assert rules.check_sdn_ids(rules.SDN_VLAN_ZONE, {"resourceId": rid})
    assert rules.check_sdn_ids(rules.SDN_VNET, {"resourceId": "mab10010"}) == []


def test_sdn_acl_without_propagate_violates() -> None:
    acl = {"path": "/sdn/zones/localnetwork/vmbr1", "propagate": False}
    assert rules.check_sdn_acl_propagates(rules.ACL, acl) == [
        "ACL on /sdn/zones/localnetwork/vmbr1 does not propagate; Proxmox checks SDN.Use on "
        "the vnet or VLAN below it, so set propagate: true"
    ]
    assert rules.check_sdn_acl_propagates(rules.ACL, {**acl, "propagate": True}) == []
    assert (
        rules.check_sdn_acl_propagates(rules.ACL, {"path": "/vms/6611", "propagate": False}) == []
    )


def _sdn_stack(
    vnets: list[tuple[str, int]], acl_zone: str = "mab1"
) -> list[tuple[str, str, dict[str, object]]]:
    stack: list[tuple[str, str, dict[str, object]]] = [
        (rules.SDN_VLAN_ZONE, "zone", {"resourceId": "mab1"})
    ]
    stack += [
        (rules.SDN_VNET, f"vnet-{i}", {"resourceId": rid, "zone": "mab1", "tag": float(tag)})
        for i, (rid, tag) in enumerate(vnets)
    ]
    stack.append((rules.ACL, "acl", {"path": f"/sdn/zones/{acl_zone}", "propagate": True}))
    return stack


def test_sdn_layout_rules() -> None:
    assert rules.check_sdn_layout(_sdn_stack([("mab10010", 10), ("mab10020", 20)])) == []
    # the old derivation: zone[:4] + vlan, which another lab's zone shares
    assert rules.check_sdn_layout(_sdn_stack([("mab110", 10)])) == [
        (
            "vnet-0",
            "vnet id mab110 is not its zone id mab1 plus the VLAN id in 4 digits (mab10010); "
            "it could collide with another lab's vnet",
        )
    ]
    dup = rules.check_sdn_layout(_sdn_stack([("mab10010", 10), ("mab10010", 10)]))
    assert ("vnet-1", "vnet id mab10010 is also used by vnet-0") in dup
    assert rules.check_sdn_layout(_sdn_stack([("mab10010", 10)], acl_zone="mlsl")) == [
        ("acl", "ACL on /sdn/zones/mlsl names SDN zone mlsl, but the stack creates mab1")
    ]


def test_reference_build_in_sdn_mode_is_compliant(reference_spec: LabSpec) -> None:
    assert reference_spec.lab.proxmox is not None
    px = reference_spec.lab.proxmox.model_copy(update={"network_mode": "sdn"})
    spec = reference_spec.model_copy(
        update={"lab": reference_spec.lab.model_copy(update={"proxmox": px})}
    )
    resources = capture(spec)
    for r in resources:
        assert rules.check_sdn_ids(r.type, r.inputs) == []
        assert rules.check_sdn_acl_propagates(r.type, r.inputs) == []
    assert rules.check_sdn_layout([(r.type, r.name, r.inputs) for r in resources]) == []


def test_cloud_init_upgrade_violates(reference_resources: Resources) -> None:
    vm = _vm(reference_resources, "rag-01")
    assert rules.check_cloud_init_no_upgrade(rules.VM, vm) == []
    vm["initialization"].pop("upgrade")  # type: ignore[attr-defined]
    assert rules.check_cloud_init_no_upgrade(rules.VM, vm) == [
        "cloud-init upgrade is not off; set initialization.upgrade: false (ciupgrade 0)"
    ]
