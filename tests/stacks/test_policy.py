"""The policy pack's rules on compliant resources (the reference build) and on violating ones."""

from __future__ import annotations

import copy

import pytest
from policy import rules

from mlseclab.targets.proxmox.offline import CapturedResource
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
    assert len(names) == len(set(names)) == 5


def test_reference_build_is_compliant(reference_resources: Resources) -> None:
    for r in reference_resources:
        assert rules.check_vm_firewall_nics(r.type, r.inputs) == []
        assert rules.check_gpu_through_mappings(r.type, r.inputs) == []
        assert rules.check_protected_dataset_retained(r.type, r.inputs, r.protect) == []
        assert rules.check_service_nic(r.type, r.inputs) == []
    stack = [(r.type, r.name, r.inputs) for r in reference_resources]
    assert rules.check_vm_firewall_enabled(stack) == []


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
