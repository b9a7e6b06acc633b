"""The pve_host role in check mode against nodes of a local lab standing in for hypervisors.

There is no Proxmox host here, so the lab's nodes play the part: a second inventory
lists three of them in the pve_hosts group under other names, the way an operator
lists real hypervisors beside the generated inventory. Nothing is changed (--check):

- ``pve-full`` (rag-01) runs the whole role as on a systemd-boot host whose
  /etc/kernel/cmdline the installer wrote, with a GPU reserved for vfio-pci and
  ZFS turned off (the nodes have no ZFS; the report must say so by control id);
- ``pve-grub`` (gateway-01) runs only the IOMMU part, as on a GRUB host;
- ``pve-nozfs`` (obs-01) keeps ZFS on and must stop with a clear message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.labs import ROOT, derived_lab_text, running_lab, write_lab
from mlseclab.spec import DATASETS_ROOT

pytestmark = pytest.mark.e2e

PLAYBOOK = ROOT / "tests" / "roles" / "playbooks" / "pve_host.yml"
INSTALLER_CMDLINE = "root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet iommu=nopt"
GPU_IDS = ["10de:2204", "10de:1aef"]  # an RTX 3090 and its audio function


def iommu_args() -> list[str]:
    """What the role must add for this CPU (the nodes share the host's CPU)."""
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    vendor = next(ln.split(":")[1].strip() for ln in cpuinfo.splitlines() if "vendor_id" in ln)
    return (["intel_iommu=on"] if vendor == "GenuineIntel" else []) + ["iommu=pt"]


def ssh(ssh_config: Path, node: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(ssh_config), node, command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def hypervisors(mgmt: dict[str, str]) -> dict[str, Any]:
    common = {
        # what the Proxmox target's inventory carries (the local lab's own root is elsewhere)
        "mlseclab_datasets_root": DATASETS_ROOT,
        "pve_host_zfs_enabled": False,
        "pve_host_vfio_pci_ids": GPU_IDS,
        "pve_host_virtiofsd_install": False,  # no package mirror in the lab
        "pve_host_virtiofsd_required": False,
        "pve_host_ssh_host_key_types": ["ed25519"],  # the node image has no RSA host key
    }
    hosts = {
        "pve-full": {"node": "rag-01", "pve_host_bootloader": "systemd-boot"},
        "pve-grub": {
            "node": "gateway-01",
            "pve_host_bootloader": "grub",
            "pve_host_vfio_enabled": False,
            "pve_host_mappings_enabled": False,
            "pve_host_ssh_enabled": False,
        },
        "pve-nozfs": {
            "node": "obs-01",
            "pve_host_bootloader": "grub",
            "pve_host_zfs_enabled": True,
        },
    }
    out: dict[str, Any] = {}
    for name, host in hosts.items():
        node = host.pop("node")
        out[name] = {"ansible_host": mgmt[node], "mlseclab_mgmt_ip": mgmt[node], **host}
    return {"pve_hosts": {"hosts": out, "vars": common}}


def results(doc: dict[str, Any], host: str) -> dict[str, dict[str, Any]]:
    """Task name (no role prefix, no control ids) -> the host's result, for every task that ran."""
    out: dict[str, dict[str, Any]] = {}
    for play in doc["plays"]:
        for task in play["tasks"]:
            if host in task["hosts"]:
                name = task["task"]["name"].split(" : ", 1)[-1].split(" | ")[0]
                out[name] = task["hosts"][host]
    return out


def after(result: dict[str, Any]) -> str:
    diffs = result.get("diff")
    diffs = diffs if isinstance(diffs, list) else [diffs]
    return "".join(str(d.get("after", "")) for d in diffs if isinstance(d, dict))


def test_pve_host_check_mode_reports_what_a_hypervisor_needs(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp_path = tmp_path_factory.mktemp("pve")  # short: ssh's ControlPath lives in the state dir
    spec = write_lab(tmp_path, derived_lab_text("pve", 79, tmp_path / "data"))
    state = tmp_path / "state"
    with running_lab(spec, state) as lab:
        home = state / lab.lab.name
        mgmt = {
            name: next(n.ip for n in node.nics if n.network == "mgmt")
            for name, node in lab.nodes.items()
        }
        wrote = ssh(
            home / "ssh_config",
            "rag-01",
            f"echo '{INSTALLER_CMDLINE}' | sudo tee /etc/kernel/cmdline >/dev/null",
        )
        assert wrote.returncode == 0, wrote.stderr
        overlay = tmp_path / "pve_hosts.yml"
        overlay.write_text(yaml.safe_dump(hypervisors(mgmt)), encoding="utf-8")
        bindir = Path(sys.executable).parent
        start = time.monotonic()
        run = subprocess.run(
            [
                str(bindir / "ansible-playbook"),
                "-i",
                str(home / "inventory.yml"),
                "-i",
                str(overlay),
                str(PLAYBOOK),
                "--check",
                "--diff",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            env={
                **os.environ,
                "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                "ANSIBLE_NOCOLOR": "1",
                "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            check=False,
        )
        seconds = time.monotonic() - start
        # check mode wrote nothing on the nodes
        after_run = ssh(
            home / "ssh_config",
            "rag-01",
            "cat /etc/kernel/cmdline; ls /etc/modules-load.d /etc/modprobe.d /run/mlseclab 2>&1",
        )
    (tmp_path / "run.json").write_text(run.stdout, encoding="utf-8")  # for a failing run
    assert run.stdout.startswith("{"), run.stderr[-3000:]
    doc = json.loads(run.stdout)
    stats = doc["stats"]
    print(f"pve_host check-mode run: {seconds:.1f}s, stats {stats}")

    # --- the full hypervisor: completes, and every part says what it would change
    assert stats["pve-full"]["failures"] == 0 and stats["pve-full"]["unreachable"] == 0, stats
    full = results(doc, "pve-full")
    failed = {name: r.get("msg") for name, r in full.items() if r.get("failed")}
    assert not failed
    cmdline = full["Write the IOMMU kernel arguments into /etc/kernel/cmdline"]
    assert cmdline["changed"]
    # the installer's arguments stay, the conflicting iommu=nopt goes, the IOMMU's come last
    assert (
        after(cmdline)
        == " ".join(["root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet", *iommu_args()]) + "\n"
    )
    modules = full["Load the VFIO modules at boot"]
    assert modules["changed"]
    assert [ln for ln in after(modules).splitlines() if not ln.startswith("#")] == [
        "vfio",
        "vfio_iommu_type1",
        "vfio_pci",
    ]
    options = full["Let vfio-pci claim the reserved GPU before any host driver"]
    assert options["changed"]
    assert "options vfio-pci ids=10de:2204,10de:1aef\n" in after(options)
    assert "softdep nouveau pre: vfio-pci\n" in after(options)
    blacklist = full["Blacklist the host GPU drivers"]
    assert blacklist["changed"] and "blacklist nvidia\n" in after(blacklist)
    assert full["Remove the vfio-pci ids and the driver blacklist when no GPU is reserved"].get(
        "skipped"
    )

    lab_root = "/var/lib/mlseclab/pve"
    dirs = full["Create the lab's directories for the mappings, root 0755"]
    assert dirs["changed"]
    assert {r["item"] for r in dirs["results"] if r["changed"]} == {
        "/var/lib/mlseclab",
        lab_root,
        f"{lab_root}/datasets",
        f"{lab_root}/ro",
    }
    datasets = full["Set the owner and mode of each dataset directory"]
    assert [r["item"] for r in datasets["results"] if r["changed"]] == [
        "corpora",
        "logs",
        "models",
        "vectors",
    ]
    units = full["Install a read-only bind mount unit for each dataset"]
    models_unit = next(r for r in units["results"] if r["item"] == "models")
    assert models_unit["changed"]
    assert f"What={lab_root}/datasets/models\n" in after(models_unit)
    assert f"Where={lab_root}/ro/models\n" in after(models_unit)
    assert "Options=bind,ro\n" in after(models_unit)
    assert "zfs-mount.service" not in after(models_unit)  # ZFS is off on this host
    assert "virtiofsd is missing on pve-full" in full["Report that virtiofsd is missing"]["msg"]

    sshd = full["Write sshd_config, validated by sshd -T first"]
    assert sshd["changed"]
    sshd_after = after(sshd)
    assert f"ListenAddress {mgmt['rag-01']}:22\n" in sshd_after
    assert "PermitRootLogin prohibit-password\n" in sshd_after
    assert "Match User root\n    DisableForwarding no\n    AllowStreamLocalForwarding local\n" in (
        sshd_after
    )

    marker = full["Record that a reboot is pending (the role never reboots)"]
    assert marker["changed"]
    pending = json.loads(after(marker))
    assert pending["reboot_required"] is True
    assert "/etc/kernel/cmdline" in pending["changed_since_boot"]
    assert "/etc/modprobe.d/mlseclab-vfio.conf" in pending["changed_since_boot"]
    assert f"kernel command line lacks {' '.join(iommu_args())}" in pending["running_kernel"]
    assert "vfio_pci is not loaded" in pending["running_kernel"]
    na = json.loads(
        after(full["Report the hypervisor controls this host does not have, by control id"])
    )
    assert na == [
        {
            "control": "MLSL-PVE-06..MLSL-PVE-09",
            "reason": "turned off by pve_host_zfs_enabled: false",
        }
    ]

    # --- the GRUB host: a drop-in, and only the IOMMU part ran
    assert stats["pve-grub"]["failures"] == 0, stats
    grub = results(doc, "pve-grub")
    dropin = grub["Write the IOMMU kernel arguments for GRUB"]
    assert dropin["changed"]
    assert f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {" ".join(iommu_args())}"' in after(dropin)
    assert grub["Load the VFIO modules at boot"].get("skipped")
    assert grub["Harden sshd through the ssh role (root by key only, mgmt address only)"]["skipped"]
    assert "Write sshd_config, validated by sshd -T first" not in grub
    na_grub = json.loads(
        after(grub["Report the hypervisor controls this host does not have, by control id"])
    )
    assert [e["control"] for e in na_grub] == [
        "MLSL-PVE-02..MLSL-PVE-04",
        "MLSL-PVE-06..MLSL-PVE-09",
        "MLSL-PVE-10..MLSL-PVE-12",
        "MLSL-PVE-13, MLSL-SSH-01..MLSL-SSH-11",
    ]

    # --- ZFS on a host without it: a clear stop, not a traceback
    assert stats["pve-nozfs"]["failures"] == 1, stats
    nozfs = results(doc, "pve-nozfs")
    stop = nozfs["Stop when ZFS is missing (a Proxmox host with datasets needs zfsutils-linux)"]
    assert stop["failed"]
    assert stop["msg"].startswith("zfs is not installed on pve-nozfs")
    assert "set pve_host_zfs_enabled: false" in stop["msg"]

    # --- check mode changed nothing on the node
    assert after_run.stdout.splitlines()[0] == INSTALLER_CMDLINE
    assert "mlseclab-vfio.conf" not in after_run.stdout
    assert "cannot access '/run/mlseclab'" in after_run.stdout
