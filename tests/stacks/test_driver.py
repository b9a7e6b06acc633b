"""The Proxmox engine without a cluster: offline plan, preflight errors, secrets handling."""

from __future__ import annotations

import inspect
import json
import ssl
import stat
import tomllib
import urllib.error
from pathlib import Path

import pulumi
import pytest
from stack_variants import REFERENCE

from mlseclab.cli import main
from mlseclab.errors import ERROR, OK, TargetError
from mlseclab.spec import LabSpec, load_spec
from mlseclab.targets.proxmox import preflight
from mlseclab.targets.proxmox.engine import PulumiEngine, ignored_changes
from mlseclab.targets.proxmox.offline import plan_offline
from mlseclab.targets.proxmox.preflight import (
    Preflight,
    explain,
    missing_privileges,
    version_problem,
)
from mlseclab.targets.proxmox.program import PULUMI_MIN


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


# -- endpoint, TLS, version and the full privilege list (review F9, F19) --------------------
@pytest.fixture
def ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """CLI, plugin and token present: preflight goes on to the endpoint."""
    monkeypatch.setattr(preflight.shutil, "which", lambda _name: "/usr/bin/pulumi")
    (tmp_path / "home" / "plugins" / "resource-proxmoxve-v8.6.0").mkdir(parents=True)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROXMOX_VE_API_TOKEN", "root@pam!t=00000000-secret")
    monkeypatch.delenv("PROXMOX_VE_ENDPOINT", raising=False)
    return monkeypatch


def _answers(version: str, perms: dict[str, dict[str, int]] | None = None) -> object:
    def api(self: Preflight, url: str, token: str | None) -> dict[str, object]:
        if url.endswith("/version"):
            return {"data": {"version": version, "release": version.rsplit(".", 1)[0]}}
        return {"data": perms if perms is not None else {"/": {"Sys.Audit": 1}}}

    return api


@pytest.mark.parametrize("endpoint", ["http://pve-01.example:8006/", "pve-01.example:8006"])
def test_http_endpoint_from_the_environment_is_refused(
    engine: PulumiEngine, ready: pytest.MonkeyPatch, endpoint: str
) -> None:
    """F19: the spec refuses http://; PROXMOX_VE_ENDPOINT used to bypass that."""
    ready.setenv("PROXMOX_VE_ENDPOINT", endpoint)
    ready.setattr(Preflight, "_api", _answers("8.4.1"))
    with pytest.raises(TargetError, match=r"not an https API endpoint .*cleartext") as info:
        engine.preflight()
    assert "00000000-secret" not in str(info.value)


def test_self_signed_certificate_gets_the_tls_advice(
    engine: PulumiEngine, ready: pytest.MonkeyPatch
) -> None:
    """F19: a self-signed certificate is not "check the network path"."""

    def api(self: Preflight, url: str, token: str | None) -> dict[str, object]:
        err = ssl.SSLCertVerificationError(1, "certificate verify failed")
        err.verify_message = "self-signed certificate in certificate chain"
        raise urllib.error.URLError(err)

    ready.setattr(Preflight, "_api", api)
    with pytest.raises(TargetError) as info:
        engine.preflight()
    line = info.value.lines[0]
    assert "self-signed certificate in certificate chain" in line
    assert "SSL_CERT_FILE" in line and "pve-root-ca.pem" in line
    assert "lab.proxmox.insecure: true" in line and "network path" not in line


@pytest.mark.parametrize("version", ["8.3.2", "8.0.4", "7.4-17"])
def test_proxmox_older_than_8_4_is_refused(
    engine: PulumiEngine, ready: pytest.MonkeyPatch, version: str
) -> None:
    """F9: virtiofs and directory mappings need PVE 8.4; /version was fetched and ignored."""
    ready.setattr(Preflight, "_api", _answers(version))
    with pytest.raises(TargetError, match=rf"runs Proxmox VE {version}; mlseclab needs 8\.4"):
        engine.preflight()


def test_proxmox_8_4_and_9_pass_the_version_check() -> None:
    assert version_problem({"version": "8.4.1"}) is None
    assert version_problem({"version": "9.0.3", "release": "9.0"}) is None
    assert version_problem({}) is not None


def test_new_enough_cluster_goes_on_to_the_privileges(
    engine: PulumiEngine, ready: pytest.MonkeyPatch
) -> None:
    ready.setattr(Preflight, "_api", _answers("9.0.3", {"/": {"Sys.Audit": 1}}))
    with pytest.raises(TargetError, match=r"lacks Sys\.Modify on /,"):
        engine.preflight()


def test_required_privileges_include_identity_creation(reference_spec: LabSpec) -> None:
    """F9: users need Realm.AllocateUser, groups Group.Allocate, roles Sys.Modify on /access."""
    privs = {(p, v) for p, v, _w in Preflight(reference_spec, REFERENCE).required_privileges()}
    assert {
        ("/access/realm/pve", "Realm.AllocateUser"),
        ("/access/groups", "Group.Allocate"),
        ("/access", "Sys.Modify"),
    } <= privs


def _with_nodes(spec: LabSpec, nodes: list[str], **template: object) -> LabSpec:
    assert spec.lab.proxmox is not None
    px = spec.lab.proxmox
    update: dict[str, object] = {"nodes": nodes}
    if template:
        update["template"] = px.template.model_copy(update=template)
    return spec.model_copy(
        update={"lab": spec.lab.model_copy(update={"proxmox": px.model_copy(update=update)})}
    )


def test_vm_migrate_is_required_when_clones_leave_the_template_node(
    reference_spec: LabSpec,
) -> None:
    """F9/F7: bpg clones on the template's node, then migrates to the VM's node."""

    def migrate(spec: LabSpec) -> bool:
        required = Preflight(spec, REFERENCE).required_privileges()
        return ("/pool/mlseclab-reference", "VM.Migrate") in {(p, v) for p, v, _ in required}

    assert not migrate(_with_nodes(reference_spec, ["pve-01"]))
    assert migrate(_with_nodes(reference_spec, ["pve-01", "pve-02", "pve-03"]))
    assert not migrate(_with_nodes(reference_spec, ["pve-02"], vm_id=None, tag="tpl"))
    assert migrate(
        _with_nodes(reference_spec, ["pve-01", "pve-02", "pve-03"], vm_id=None, tag="tpl")
    )


# -- plan: never silently offline (review F21) ------------------------------------------------
def test_plan_with_an_unusable_cluster_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(preflight.shutil, "which", lambda _name: None)
    assert main(["plan", "-f", str(REFERENCE), "--target", "proxmox", "--json"]) == ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        "error: the pulumi CLI is not on PATH; install it (https://www.pulumi.com/docs/install/) "
        "or use `mlseclab plan --target proxmox --offline` for the offline plan"
    )
    # any other preflight failure (token, endpoint, privileges) names --offline too
    monkeypatch.setattr(preflight.shutil, "which", lambda _name: "/usr/bin/pulumi")
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    assert main(["plan", "-f", str(REFERENCE), "--target", "proxmox"]) == ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the proxmoxve resource plugin is not in")
    assert err.endswith("(plan without a cluster: mlseclab plan --target proxmox --offline)")


def test_offline_plan_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(tmp_path / "state"))

    def no_preflight(self: PulumiEngine) -> None:
        raise AssertionError("--offline must not run preflight or contact a cluster")

    monkeypatch.setattr(PulumiEngine, "preflight", no_preflight)
    argv = ["plan", "-f", str(REFERENCE), "--target", "proxmox", "--offline", "--json"]
    assert main(argv) == OK
    plan = json.loads(capsys.readouterr().out)
    assert plan["offline"] is True and plan["note"].startswith("offline (--offline)")
    assert len(plan["resources"]) == len(plan_offline(load_spec(REFERENCE), REFERENCE))


# -- version floors (review F20) ----------------------------------------------------------------
def test_pulumi_floor_is_the_first_sdk_with_replace_with() -> None:
    root = Path(__file__).resolve().parents[2]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["proxmox"]
    floor = next(d for d in extra if d.startswith("pulumi>="))
    assert floor == f"pulumi>={'.'.join(map(str, PULUMI_MIN))},<4"
    assert PULUMI_MIN >= (3, 207)  # replace_with is absent from the 3.204-3.206 wheels
    assert "replace_with" in inspect.signature(pulumi.ResourceOptions).parameters
    doc = (root / "docs" / "proxmox.md").read_text()
    assert "**The pulumi CLI** (3.207 or newer" in doc and "3.150" not in doc


def test_preflight_refuses_an_sdk_without_replace_with(
    engine: PulumiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight.importlib.metadata, "version", lambda _name: "3.204.0")
    with pytest.raises(TargetError, match=r"SDK is 3\.204\.0; the program needs 3\.207 or newer"):
        engine.preflight()
