"""The Proxmox program over the reference lab, run under Pulumi mocks (preview=False).

Each test asserts a security property on the inputs the mocks captured; the
``broken`` tests show that the same checks fail when the build is broken on purpose.
"""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import stack_checks as checks
from stacks.ignored import IGNORED_CHANGES
from stacks.settings import TEST_SSH_KEY

from mlseclab.spec import LabSpec, NodeKind
from mlseclab.targets.proxmox.offline import CapturedResource, capture
from stacks import firewall, provider

Resources = list[CapturedResource]


def test_one_vm_per_node(reference_spec: LabSpec, reference_resources: Resources) -> None:
    assert checks.check_inventory(reference_spec, reference_resources) == []


def test_nic_vlans_match_segments(reference_spec: LabSpec, reference_resources: Resources) -> None:
    assert checks.check_vlans(reference_spec, reference_resources) == []
    vm = checks.vms(reference_resources)["inference-01"]
    assert [n["vlanId"] for n in vm.inputs["networkDevices"]] == [10.0, 30.0]


def test_nothing_on_the_management_bridge(
    reference_spec: LabSpec, reference_resources: Resources
) -> None:
    assert checks.check_no_mgmt_bridge(reference_spec, reference_resources) == []


def test_every_nic_has_the_firewall_on(reference_resources: Resources) -> None:
    assert checks.check_nic_firewall(reference_resources) == []


def test_gpu_nodes_are_q35_ovmf_with_a_mapping(
    reference_spec: LabSpec, reference_resources: Resources
) -> None:
    assert checks.check_gpu(reference_spec, reference_resources) == []
    vm = checks.vms(reference_resources)["inference-01"]
    assert vm.inputs["hostpcis"] == [
        {"device": "hostpci0", "mapping": "gpu-inference", "pcie": True}
    ]


def test_flows_are_the_only_traffic_allowed(
    reference_spec: LabSpec, reference_resources: Resources
) -> None:
    assert checks.check_flows(reference_spec, reference_resources) == []
    assert checks.check_default_drop(reference_resources) == []


def test_self_flow_does_not_open_the_source_to_everyone(reference_resources: Resources) -> None:
    """metrics-scrape (observability -> all) must not let anyone reach obs-01:9100."""
    groups = checks.of_type(reference_resources, provider.SECURITY_GROUP)
    for g in groups:
        for rule in g.inputs["rules"]:
            if rule["dport"] == "9100":
                assert rule["source"] == "10.66.10.15,10.66.60.15"


def test_read_only_mounts_are_read_only(
    reference_spec: LabSpec, reference_resources: Resources
) -> None:
    assert checks.check_mounts(reference_spec, reference_resources) == []
    models = next(
        r
        for r in checks.of_type(reference_resources, provider.DIR_MAPPING)
        if r.inputs["name"] == "reference-models-ro"
    )
    assert models.inputs["maps"] == [
        {"node": "pve-01", "path": "/var/lib/mlseclab/reference/ro/models"}
    ]


def test_protected_datasets_are_retained(
    reference_spec: LabSpec, reference_resources: Resources
) -> None:
    assert checks.check_protected(reference_spec, reference_resources) == []


def test_vm_ids_unique_and_stable(reference_spec: LabSpec, reference_resources: Resources) -> None:
    assert checks.check_vm_ids(reference_spec, reference_resources) == []
    again = capture(reference_spec)
    ids = lambda rs: {n: vm.inputs["vmId"] for n, vm in checks.vms(rs).items()}  # noqa: E731
    assert ids(again) == ids(reference_resources)


def test_cloud_init_gateway_only_on_service_nic(
    reference_spec: LabSpec, reference_resources: Resources
) -> None:
    assert checks.check_cloud_init(reference_spec, reference_resources, TEST_SSH_KEY) == []


def test_children_are_parented(reference_resources: Resources) -> None:
    components = {r.urn for r in reference_resources if not r.custom}
    for r in reference_resources:
        if r.type != "mlseclab:lab:Lab":
            assert r.parent in components, f"{r.name} has no component parent"
    assert all(r.type.startswith("mlseclab:") for r in reference_resources if not r.custom)


def test_every_ignore_changes_is_listed_for_drift(reference_resources: Resources) -> None:
    listed = {(c.type, c.property) for c in IGNORED_CHANGES}
    used = {(r.type, p) for r in reference_resources for p in r.ignore_changes}
    assert used and used <= listed


def test_no_secret_in_inputs(reference_resources: Resources) -> None:
    """Users have no password (token only); the provider reads its token from the environment."""
    for r in reference_resources:
        assert "password" not in r.inputs, r.name
    prov = next(r for r in reference_resources if r.type == provider.PROVIDER)
    assert not prov.inputs.get("apiToken")


# -- the checks can fail ------------------------------------------------------------------
def _replace_vm(resources: Resources, node: str, **changes: object) -> Resources:
    out = []
    for r in resources:
        if r.type == provider.VM and r.inputs["name"] == node:
            inputs = copy.deepcopy(r.inputs)
            inputs.update(changes)
            r = dataclasses.replace(r, inputs=inputs)
        out.append(r)
    return out


def test_broken_nic_firewall_is_caught(reference_resources: Resources) -> None:
    vm = checks.vms(reference_resources)["rag-01"]
    nics = copy.deepcopy(vm.inputs["networkDevices"])
    nics[1]["firewall"] = False
    broken = _replace_vm(reference_resources, "rag-01", networkDevices=nics)
    assert checks.check_nic_firewall(broken) == ["rag-01.net1: firewall False"]


def test_broken_vlan_is_caught(reference_spec: LabSpec, reference_resources: Resources) -> None:
    vm = checks.vms(reference_resources)["vectordb-01"]
    nics = copy.deepcopy(vm.inputs["networkDevices"])
    nics[1]["vlanId"] = 10.0  # the data NIC put on the mgmt VLAN
    broken = _replace_vm(reference_resources, "vectordb-01", networkDevices=nics)
    assert len(checks.check_vlans(reference_spec, broken)) == 1


def test_raw_pci_id_is_caught(reference_spec: LabSpec, reference_resources: Resources) -> None:
    broken = _replace_vm(
        reference_resources,
        "inference-01",
        hostpcis=[{"device": "hostpci0", "id": "0000:01:00.0", "pcie": True}],
    )
    assert checks.check_gpu(reference_spec, broken)


def test_ro_mount_on_writable_mapping_is_caught(
    reference_spec: LabSpec, reference_resources: Resources
) -> None:
    vm = checks.vms(reference_resources)["inference-01"]
    fs = copy.deepcopy(vm.inputs["virtiofs"])
    fs[0]["mapping"] = "reference-vectors"
    broken = _replace_vm(reference_resources, "inference-01", virtiofs=fs)
    assert checks.check_mounts(reference_spec, broken)


def test_broken_build_extra_port_is_caught(
    reference_spec: LabSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that opens one port beyond the flows fails check_flows."""
    real = firewall.role_group_rules

    def leaky(*args: object, **kwargs: object) -> list[dict[str, object]]:
        rules = real(*args, **kwargs)  # type: ignore[arg-type]
        return [
            *rules,
            {
                "type": "in",
                "action": "ACCEPT",
                "proto": "tcp",
                "dport": "6379",
                "dest": "10.66.40.13",
                "comment": "debug",
            },
        ]

    monkeypatch.setattr(firewall, "role_group_rules", leaky)
    problems = checks.check_flows(reference_spec, capture(reference_spec))
    assert problems and all("beyond the flows" in p for p in problems)


def test_broken_build_output_accept_is_caught(
    reference_spec: LabSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build whose VMs may send anywhere fails check_default_drop."""
    monkeypatch.setitem(firewall.VM_FIREWALL_OPTIONS, "output_policy", "ACCEPT")
    problems = checks.check_default_drop(capture(reference_spec))
    assert len(problems) == len(reference_spec.nodes)
    assert all("outputPolicy='ACCEPT'" in p for p in problems)


def test_lab_bridge_equal_to_mgmt_bridge_is_refused(reference_spec: LabSpec) -> None:
    assert reference_spec.lab.proxmox is not None
    px = reference_spec.lab.proxmox.model_copy(update={"lab_bridge": "vmbr0"})
    spec = reference_spec.model_copy(
        update={"lab": reference_spec.lab.model_copy(update={"proxmox": px})}
    )
    with pytest.raises(ValueError, match="management bridge"):
        capture(spec)


# -- review fixes ---------------------------------------------------------------------------
def _proxmox(spec: LabSpec, *, lab: str | None = None, **changes: object) -> LabSpec:
    """``spec`` with lab.proxmox fields changed (and the lab renamed)."""
    assert spec.lab.proxmox is not None
    px = spec.lab.proxmox.model_copy(update=changes)
    update: dict[str, object] = {"proxmox": px}
    if lab is not None:
        update["name"] = lab
    return spec.model_copy(update={"lab": spec.lab.model_copy(update=update)})


def _ids(resources: Resources, typ: str) -> list[str]:
    return [r.inputs["resourceId"] for r in checks.of_type(resources, typ)]


def _network_acl(resources: Resources) -> CapturedResource:
    return next(
        r
        for r in checks.of_type(resources, provider.ACL)
        if str(r.inputs["path"]).startswith("/sdn/zones/")
    )


def test_sdn_ids_are_proxmox_ids_and_differ_between_labs(reference_spec: LabSpec) -> None:
    """F5: zone and vnet ids match [a-zA-Z][a-zA-Z0-9]*[a-zA-Z0-9], <= 8, and two labs on the
    default zone get different zone and vnet ids (vnet ids are cluster-global)."""
    one = capture(_proxmox(reference_spec, network_mode="sdn"))
    two = capture(_proxmox(reference_spec, lab="reference2", network_mode="sdn"))
    for resources in (one, two):
        zones, vnets = _ids(resources, provider.SDN_VLAN_ZONE), _ids(resources, provider.SDN_VNET)
        assert len(zones) == 1 and len(vnets) == len(reference_spec.networks) == len(set(vnets))
        for rid in [*zones, *vnets]:
            assert len(rid) <= 8 and re.fullmatch(r"[a-zA-Z][a-zA-Z0-9]*[a-zA-Z0-9]", rid), rid
    assert set(_ids(one, provider.SDN_VNET)).isdisjoint(_ids(two, provider.SDN_VNET))
    assert _ids(one, provider.SDN_VLAN_ZONE) != _ids(two, provider.SDN_VLAN_ZONE)


def test_sdn_vnet_ids_are_the_zone_and_the_vlan(reference_spec: LabSpec) -> None:
    """F5: an explicit zone: each vnet is the zone id plus its VLAN in 4 digits."""
    resources = capture(_proxmox(reference_spec, network_mode="sdn", sdn_zone="lab7"))
    assert _ids(resources, provider.SDN_VLAN_ZONE) == ["lab7"]
    vnets = {
        r.inputs["tag"]: r.inputs["resourceId"]
        for r in checks.of_type(resources, provider.SDN_VNET)
    }
    assert vnets == {float(s.vlan): f"lab7{s.vlan:04d}" for s in reference_spec.networks.values()}


def test_sdn_grant_is_on_the_zone_it_creates_and_propagates(reference_spec: LabSpec) -> None:
    """F5/F6: the token's SDN.Use is on the zone the stack creates, propagated to its vnets."""
    resources = capture(_proxmox(reference_spec, network_mode="sdn"))
    (zone,) = _ids(resources, provider.SDN_VLAN_ZONE)
    acl = _network_acl(resources)
    assert acl.inputs["path"] == f"/sdn/zones/{zone}"
    assert acl.inputs["propagate"] is True


def test_bridge_grant_propagates_to_the_vlans(reference_resources: Resources) -> None:
    """F6: Proxmox checks /sdn/zones/localnetwork/vmbr1/<tag> for a tagged NIC."""
    acl = _network_acl(reference_resources)
    assert acl.inputs["path"] == "/sdn/zones/localnetwork/vmbr1"
    assert acl.inputs["propagate"] is True


def test_cloud_init_never_upgrades_packages(reference_resources: Resources) -> None:
    """F12: PVE defaults ciupgrade to 1; every VM sets it off."""
    vms = checks.vms(reference_resources)
    assert vms and all(vm.inputs["initialization"]["upgrade"] is False for vm in vms.values())


def test_vm_timeouts_are_the_providers_arguments(reference_resources: Resources) -> None:
    """F15: bpg's VM resource ignores Pulumi CustomTimeouts; the timeout_* arguments count."""
    for vm in checks.vms(reference_resources).values():
        assert vm.custom_timeouts == ("", "", "")
        assert vm.inputs["timeoutClone"] == 1800.0
        assert vm.inputs["timeoutCreate"] == 1800.0
        assert vm.inputs["timeoutShutdownVm"] == 900.0
        assert {"timeoutStartVm", "timeoutStopVm", "timeoutReboot", "timeoutMigrate"} <= set(
            vm.inputs
        )


def test_program_refuses_a_container(reference_spec: LabSpec) -> None:
    """F17: a spec that reached the program another way (plain `pulumi up`, a test) with a
    container is refused, not silently built as a VM."""
    node = reference_spec.nodes["rag-01"].model_copy(update={"kind": NodeKind.CONTAINER})
    spec = reference_spec.model_copy(update={"nodes": {**reference_spec.nodes, "rag-01": node}})
    with pytest.raises(ValueError, match=r"nodes\.rag-01\.kind: rag-01 is a container"):
        capture(spec)
