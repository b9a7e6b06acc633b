"""What both targets share: the status row of a lab node."""

from __future__ import annotations

from helpers.labs import REFERENCE
from mlseclab.spec import load_spec
from mlseclab.targets import NodeStatus
from mlseclab.topology import derive


def test_status_row_comes_from_the_topology() -> None:
    node = derive(load_spec(REFERENCE)).nodes["inference-01"]
    assert NodeStatus.of(node, "vm", "provisioned", "vm_id 6612") == NodeStatus(
        name="inference-01",
        role="inference",
        kind="vm",
        segments="mgmt 10.66.10.12, inference 10.66.30.12",
        mgmt_ip="10.66.10.12",
        state="provisioned",
        detail="vm_id 6612",
    )
    assert NodeStatus.of(node, "container", "absent").detail == ""
