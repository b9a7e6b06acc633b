"""The pve_host role without a hypervisor: playbook syntax, its contract, its snapshot script.

The role itself runs against nodes of a local lab in tests/e2e/test_pve_host.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.labs import REFERENCE, ROOT
from mlseclab.inventory import parse_inventory, render_inventory
from mlseclab.spec import load_spec
from mlseclab.state import LabHome
from mlseclab.topology import derive

ROLE = ROOT / "roles" / "pve_host"
BIN = Path(sys.executable).parent


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.mark.parametrize("playbook", ["roles/site.yml", "tests/roles/playbooks/pve_host.yml"])
def test_playbook_with_the_pve_hosts_play_passes_syntax_check(
    playbook: str, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        render_inventory(
            derive(load_spec(REFERENCE)), LabHome("reference", tmp_path), "container", "local"
        ),
        encoding="utf-8",
    )
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory), playbook],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ansible_env(),
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_site_applies_only_pve_host_to_the_hypervisors() -> None:
    plays = yaml.safe_load((ROOT / "roles" / "site.yml").read_text(encoding="utf-8"))
    assert plays[0]["hosts"] == "all:!pve_hosts"  # base, ssh, firewall are for lab nodes
    pve = [p for p in plays if p["hosts"] == "pve_hosts"]
    assert len(pve) == 1 and pve[0]["roles"] == [{"role": "pve_host"}]
    assert all("pve_host" not in str(p.get("roles")) for p in plays if p["hosts"] != "pve_hosts")


def test_every_variable_and_control_is_in_the_contract_and_the_readme() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    options = specs["argument_specs"]["main"]["options"]
    readme = (ROLE / "README.md").read_text(encoding="utf-8")
    assert set(defaults) <= set(options)
    assert set(options) - set(defaults) == {"mlseclab_lab", "mlseclab_datasets", "mlseclab_mgmt_ip"}
    for name in options:
        assert f"| `{name}` |" in readme, name
    tasks = "".join(p.read_text(encoding="utf-8") for p in (ROLE / "tasks").glob("*.yml"))
    used = set(re.findall(r"MLSL-PVE-\d\d", tasks))
    documented = set(re.findall(r"^\| (MLSL-PVE-\d\d) \|", readme, re.MULTILINE))
    assert used == documented == {f"MLSL-PVE-{i:02d}" for i in range(14)}


FAKE_ZFS = r"""#!/bin/sh
# zfs for the snapshot script: snapshots live one per line in $FAKE/<dataset, / as _>
log="$FAKE/calls"
echo "$*" >> "$log"
case "$1" in
  snapshot) ds=${2%@*}; echo "$2" >> "$FAKE/$(echo "$ds" | tr / _)";;
  list) eval ds=\${$#}; cat "$FAKE/$(echo "$ds" | tr / _)" 2>/dev/null || true;;
  destroy) f="$FAKE/$(echo "${2%@*}" | tr / _)"; grep -vx "$2" "$f" > "$f.new"; mv "$f.new" "$f";;
  *) exit 2;;
esac
"""


def test_snapshot_script_keeps_the_newest_of_its_own_and_nothing_else(tmp_path: Path) -> None:
    datasets = {
        "models": {"snapshots": {"keep": 2, "before_destroy": True}},
        "logs": {"snapshots": {"keep": 0, "before_destroy": False}},
    }
    variables = {
        "mlseclab_lab": "t",
        "pve_host_zfs_parent": "tank/mlseclab/t",
        "pve_host_datasets": datasets,
        "pve_host_dataset_names": sorted(datasets),
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables), encoding="utf-8")
    script = tmp_path / "snapshot.sh"
    render = subprocess.run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-c",
            "local",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={ROLE}/templates/usr/local/sbin/mlseclab-zfs-snapshot.j2 dest={script}",
            "-e",
            f"@{tmp_path / 'vars.json'}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ansible_env(),
        timeout=120,
        check=False,
    )
    assert render.returncode == 0, render.stdout[-2000:] + render.stderr[-2000:]
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "zfs").write_text(FAKE_ZFS, encoding="utf-8")
    (fake / "zfs").chmod(0o755)
    existing = [
        "tank/mlseclab/t/models@mlseclab-20260101T000000Z",
        "tank/mlseclab/t/models@before-upgrade",  # someone else's: never touched
        "tank/mlseclab/t/models@mlseclab-20260102T000000Z",
    ]
    (fake / "tank_mlseclab_t_models").write_text("\n".join(existing) + "\n", encoding="utf-8")
    run = subprocess.run(
        ["sh", str(script)],
        capture_output=True,
        text=True,
        env={"PATH": f"{fake}{os.pathsep}/usr/bin:/bin", "FAKE": str(fake)},
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    left = (fake / "tank_mlseclab_t_models").read_text(encoding="utf-8").split()
    assert left[:2] == ["tank/mlseclab/t/models@before-upgrade", existing[2]]
    assert len(left) == 3 and re.fullmatch(r"tank/mlseclab/t/models@mlseclab-\d{8}T\d{6}Z", left[2])
    calls = (fake / "calls").read_text(encoding="utf-8")
    assert "logs" not in calls  # keep 0: no snapshots at all
    assert f"destroy {existing[0]}\n" in calls and calls.count("destroy") == 1


def test_zfs_properties_follow_the_spec_in_the_units_zfs_get_shows(tmp_path: Path) -> None:
    """What community.general.zfs is given per dataset (ZFS cannot run here)."""
    spec = load_spec(REFERENCE)
    doc = parse_inventory(
        render_inventory(derive(spec), LabHome("reference", tmp_path), "container", "local")
    )
    datasets = doc["all"]["vars"]["mlseclab_datasets"]
    datasets["vectors"]["properties"]["encryption"] = True
    out = tmp_path / "props.json"
    playbook = tmp_path / "props.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Render the role's ZFS variables",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars_files": [
                        str(ROLE / "defaults" / "main.yml"),
                        str(ROLE / "vars" / "main.yml"),
                    ],
                    "vars": {
                        "mlseclab_lab": "reference",
                        "mlseclab_datasets": datasets,
                        "ansible_python_interpreter": sys.executable,
                    },
                    "tasks": [
                        {
                            "name": "Write them out",
                            "ansible.builtin.copy": {
                                "content": "{{ {'props': pve_host_zfs_properties,"
                                " 'encrypted': pve_host_zfs_encrypted} | to_json }}",
                                "dest": str(out),
                                "mode": "0600",
                            },
                        }
                    ],
                }
            ]
        ),
        encoding="utf-8",
    )
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ansible_env(),
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rendered = json.loads(out.read_text(encoding="utf-8"))
    assert rendered["encrypted"] == ["vectors"]
    assert rendered["props"]["models"] == {
        "recordsize": "1048576",  # zfs get -p reports bytes: anything else never converges
        "compression": "off",
        "atime": "off",
        "mountpoint": "/var/lib/mlseclab/reference/datasets/models",
        "mlseclab:lab": "reference",
        "mlseclab:protect": "true",
        "mlseclab:snapshots-keep": "7",
        "mlseclab:snapshot-before-destroy": "true",
    }
    assert rendered["props"]["logs"]["mlseclab:protect"] == "false"
    assert rendered["props"]["logs"]["mlseclab:snapshots-keep"] == "3"
    assert rendered["props"]["vectors"]["recordsize"] == "16384"
    assert rendered["props"]["vectors"]["keylocation"] == (
        "file:///etc/mlseclab/zfs-keys/reference/vectors.key"
    )
    assert all(isinstance(v, str) for p in rendered["props"].values() for v in p.values())
