"""The same properties over generated labs: nodes added and removed, VLANs and CIDRs
changed, GPUs and mounts toggled, bridge and SDN modes, templates by id or tag."""

from __future__ import annotations

import stack_checks as checks
from hypothesis import HealthCheck, given, settings
from stack_variants import lab_specs
from stacks.compute import vm_ids
from stacks.settings import TEST_SSH_KEY

from mlseclab.spec import LabSpec
from mlseclab.targets.proxmox.offline import capture


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lab_specs())
def test_generated_labs_keep_every_property(spec: LabSpec) -> None:
    resources = capture(spec)
    assert checks.all_problems(spec, resources, TEST_SSH_KEY) == []


@settings(max_examples=40, deadline=None)
@given(lab_specs())
def test_vm_ids_do_not_move_when_a_node_is_added(spec: LabSpec) -> None:
    before = vm_ids(spec)
    assert vm_ids(spec) == before  # same spec, same ids
    first = next(iter(spec.nodes.values()))
    grown = spec.model_copy(
        update={
            "nodes": {
                **spec.nodes,
                "zz-new": first.model_copy(update={"vm_id": None, "nics": first.nics}),
            }
        }
    )
    after = vm_ids(grown)
    assert {n: after[n] for n in before} == before
    assert len(set(after.values())) == len(after)
