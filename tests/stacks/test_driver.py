"""The Proxmox engine without a cluster: offline plan, preflight errors, secrets handling."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from stack_variants import REFERENCE

from mlseclab.errors import TargetError
from mlseclab.spec import LabSpec
from mlseclab.targets.proxmox import preflight
from mlseclab.targets.proxmox.engine import PulumiEngine, ignored_changes
from mlseclab.targets.proxmox.offline import plan_offline
from mlseclab.targets.proxmox.preflight import Preflight, explain, missing_privileges


@pytest.fixture
def engine(reference_spec: LabSpec, tmp_path: Path) -> PulumiEngine:
    return PulumiEngine(reference_spec, REFERENCE, tmp_path / "state")


def test_offline_plan_lists_every_resource(reference_spec: LabSpec) -> None:
    plan = plan_offline(reference_spec, REFERENCE)
    vms = [p for p in plan if p.type == "proxmoxve:index/vmLegacy:VmLegacy"]
    assert len(vms) == 5
    gpu = next(p for p in vms if p.name == "reference-inference-01-vm")
    assert gpu.summary.startswith(
        "vm_id 6612 on pve-01, q35/ovmf, gpu mapping gpu-inference, 2 NICs vlan 10,30"
    )
    assert gpu.parent == "reference-inference-01"
    assert plan == plan_offline(reference_spec, REFERENCE)  # same order, same content on every run


def test_preflight_names_a_missing_cli(
    engine: PulumiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight.shutil, "which", lambda _name: None)
    with pytest.raises(TargetError, match="pulumi CLI is not on PATH"):
        engine.preflight()


def test_preflight_names_a_missing_plugin(
    engine: PulumiEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight.shutil, "which", lambda _name: "/usr/bin/pulumi")
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    with pytest.raises(TargetError, match=r"pulumi plugin install resource proxmoxve 8\.6\.0"):
        engine.preflight()


def test_preflight_names_a_missing_token(
    engine: PulumiEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight.shutil, "which", lambda _name: "/usr/bin/pulumi")
    (tmp_path / "home" / "plugins" / "resource-proxmoxve-v8.6.0").mkdir(parents=True)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PROXMOX_VE_API_TOKEN", raising=False)
    with pytest.raises(TargetError, match="no Proxmox API token: export PROXMOX_VE_API_TOKEN"):
        engine.preflight()


def test_preflight_names_an_endpoint_that_does_not_answer(
    engine: PulumiEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight.shutil, "which", lambda _name: "/usr/bin/pulumi")
    (tmp_path / "home" / "plugins" / "resource-proxmoxve-v8.6.0").mkdir(parents=True)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROXMOX_VE_API_TOKEN", "root@pam!t=00000000-secret")
    monkeypatch.setenv("PROXMOX_VE_ENDPOINT", "https://127.0.0.1:9/")
    with pytest.raises(TargetError, match="does not answer") as info:
        engine.preflight()
    assert "00000000-secret" not in str(info.value)


def test_missing_privilege_is_named() -> None:
    required = [("/pool/lab", "VM.Allocate", "create VMs"), ("/vms/9000", "VM.Clone", "clone")]
    granted = {"/": {"VM.Allocate": 1}}
    assert missing_privileges(granted, required) == [("/vms/9000", "VM.Clone", "clone")]
    assert (
        missing_privileges({"/vms": {"VM.Clone": 1}, "/pool/lab": {"VM.Allocate": 1}}, required)
        == []
    )


def test_exact_path_grant_without_propagate_counts() -> None:
    # F8: the real answer shape: the value is the propagate flag.
    required = [("/vms/9000", "VM.Clone", "clone"), ("/pool/lab", "VM.Allocate", "create")]
    granted = {"/vms/9000": {"VM.Clone": 0}, "/pool": {"VM.Allocate": 0}}
    assert missing_privileges(granted, required) == [("/pool/lab", "VM.Allocate", "create")]


def test_required_privileges_cover_the_lab(reference_spec: LabSpec) -> None:
    required = Preflight(reference_spec, REFERENCE).required_privileges()
    privs = {(p, v) for p, v, _why in required}
    assert ("/vms/9000", "VM.Clone") in privs
    assert ("/mapping/pci/gpu-inference", "Mapping.Use") in privs
    assert ("/pool/mlseclab-reference", "VM.Config.HWType") in privs


def test_engine_errors_become_one_actionable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXMOX_VE_API_TOKEN", "ops@pve!lab=abcdef-secret")
    line = explain("error: 403 Forbidden: Permission check failed (/vms/6612, VM.Allocate)")
    assert line == (
        "the API token lacks VM.Allocate on /vms/6612; grant it with an ACL (see docs/proxmox.md)"
    )
    other = explain("error: something failed with PVEAPIToken=ops@pve!lab=abcdef-secret")
    assert "abcdef-secret" not in other and other.startswith("pulumi failed:")


def test_passphrase_file_is_private_and_never_in_env_values(
    engine: PulumiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    env = engine.passphrase_env()
    path = Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() not in str(env)
    path.chmod(0o644)
    with pytest.raises(TargetError, match="chmod 600"):
        engine.passphrase_env()


def test_file_backend_under_the_lab_state(
    engine: PulumiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    assert engine.backend_url() == (engine.state_dir / "pulumi").resolve().as_uri()
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://bucket/lab")
    assert engine.backend_url() == "s3://bucket/lab"


def test_ignored_changes_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "proxmox.md").read_text()
    changes = ignored_changes()
    assert changes
    for change in changes:
        assert f"`{change.property}`" in doc


def test_sdn_use_is_required_where_proxmox_checks_it(reference_spec: LabSpec) -> None:
    """F6: Proxmox checks SDN.Use on /sdn/zones/localnetwork/<bridge>/<tag> for a tagged NIC;
    a grant on the bridge without propagate does not reach it, a propagated one does."""
    required = Preflight(reference_spec, REFERENCE).required_privileges()
    sdn = [r for r in required if r[1] == "SDN.Use"]
    assert {p for p, _v, _w in sdn} == {
        f"/sdn/zones/localnetwork/vmbr1/{s.vlan}" for s in reference_spec.networks.values()
    }
    bridge = "/sdn/zones/localnetwork/vmbr1"
    assert missing_privileges({bridge: {"SDN.Use": 0}}, sdn) == sdn
    assert missing_privileges({bridge: {"SDN.Use": 1}}, sdn) == []
