"""The Automation API path against a real cluster.

Runs only where the pulumi CLI is on PATH and PROXMOX_VE_ENDPOINT is set (with
PROXMOX_VE_API_TOKEN); anywhere else it is reported as skipped with the reason,
never as passed. It previews; set MLSECLAB_IT_APPLY=1 to also run up, drift and down.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from stack_variants import REFERENCE

from mlseclab.spec import LabSpec
from mlseclab.targets.proxmox.engine import PulumiEngine

pytestmark = pytest.mark.skipif(
    shutil.which("pulumi") is None or not os.environ.get("PROXMOX_VE_ENDPOINT"),
    reason="needs the pulumi CLI on PATH and PROXMOX_VE_ENDPOINT (a Proxmox VE cluster)",
)


def test_preview_then_optionally_apply(reference_spec: LabSpec, tmp_path: Path) -> None:
    target = PulumiEngine(reference_spec, REFERENCE, tmp_path / "state")
    target.preflight()
    plan = target.plan()
    assert (
        any("proxmoxve:index/vmLegacy:VmLegacy" in step for step in plan.steps)
        or plan.changes.get("same", 0) > 0
    )
    if os.environ.get("MLSECLAB_IT_APPLY") != "1":
        return
    nodes = target.up(on_event=print)
    assert {n.name for n in nodes.values()} == set(reference_spec.nodes)
    assert target.drift() == []
    target.down()
