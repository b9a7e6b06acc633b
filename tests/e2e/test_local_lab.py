"""The reference lab on the local target, for real: up, SSH, reachability, resume, down.

The lab is the reference lab renamed ``e2e`` and moved to 10.77.0.0/16, so the
suite never touches a reference lab a user has up. It is always taken down,
also when a test fails; the last tests prove that nothing is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.labs import ROOT, SPECS, derived_lab_text, leftovers, mlseclab, running_lab, write_lab
from mlseclab.spec import LabSpec
from mlseclab.state import LabHome
from mlseclab.targets.local.names import LocalNames
from mlseclab.topology import Topology, derive

pytestmark = pytest.mark.e2e


@dataclass
class Lab:
    spec_path: Path
    spec: LabSpec
    topo: Topology
    home: LabHome
    names: LocalNames
    env: dict[str, str]

    def ssh(self, node: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.home.ssh_config), node, command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return mlseclab(*args, "-f", str(self.spec_path), env=self.env)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("e2e")
    spec_path = write_lab(base, derived_lab_text("e2e", 77, base / "data"))
    state = base / "state"
    with running_lab(spec_path, state) as spec:
        home = LabHome("e2e", state / "e2e")
        yield Lab(
            spec_path,
            spec,
            derive(spec),
            home,
            LocalNames("e2e", base / "data"),
            {"MLSECLAB_STATE_DIR": str(state)},
        )


def test_every_node_runs_systemd_and_answers_ssh_with_a_pinned_host_key(lab: Lab) -> None:
    for node in lab.topo.nodes:
        proc = lab.ssh(node, "hostname; systemctl is-system-running")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [node, "running"]
    known = lab.home.known_hosts.read_text(encoding="utf-8").splitlines()
    assert sorted(line.split()[0] for line in known) == sorted(lab.topo.nodes)
    assert len({line.split()[2] for line in known}) == len(known)  # every node its own key


def test_nodes_have_their_own_identity(lab: Lab) -> None:
    ids = {lab.ssh(n, "cat /etc/machine-id").stdout.strip() for n in lab.topo.nodes}
    assert len(ids) == len(lab.topo.nodes)


def test_allowed_flow_connects(lab: Lab) -> None:
    vectordb = lab.topo.nodes["vectordb-01"]
    data_ip = vectordb.interface_on("data").ip  # type: ignore[union-attr]
    start = lab.ssh(
        "vectordb-01",
        f"sudo systemd-run --unit=e2e-listen --collect --quiet "
        f"timeout 60 nc -lk -s {data_ip} -p 5432",
    )
    assert start.returncode == 0, start.stderr
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = lab.ssh("rag-01", f"nc -z -w 2 {data_ip} 5432")
            if probe.returncode == 0:
                break
            time.sleep(0.3)
        assert probe.returncode == 0, probe.stderr
    finally:
        lab.ssh("vectordb-01", "sudo systemctl stop e2e-listen")


def _drops(lab: Lab) -> int:
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.names.router_ns,
            "nft",
            "-j",
            "list",
            "chain",
            "inet",
            lab.names.nft_table,
            "forward",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # counted by the segment the packet came from, and a catch-all for any other
    counts = [
        int(next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e))
        for item in json.loads(out)["nftables"]
        if (rule := item.get("rule")) and rule.get("comment", "").endswith("not an allowed flow")
    ]
    assert counts, "the router has no drop counter"
    return sum(counts)


def test_denied_flow_is_dropped_by_the_router(lab: Lab) -> None:
    obs_mgmt = lab.topo.nodes["obs-01"].mgmt.ip
    # obs-01's sshd is up (the operator gets in) ...
    assert lab.ssh("obs-01", "true").returncode == 0
    before = _drops(lab)
    # ... but rag-01 -> obs-01:22 is not a flow: the router drops it, on mgmt as on obs
    for address in (obs_mgmt, lab.topo.nodes["obs-01"].interface_on("obs").ip):  # type: ignore[union-attr]
        probe = lab.ssh("rag-01", f"nc -z -w 2 {address} 22")
        assert probe.returncode != 0, f"rag-01 reached obs-01 {address}:22"
    assert _drops(lab) > before


def test_no_route_leaves_the_lab(lab: Lab) -> None:
    for node in ("rag-01", "inference-01"):
        proc = lab.ssh(node, "ip route get 192.0.2.1")  # a route lookup: nothing is sent
        assert proc.returncode != 0
        assert "unreachable" in proc.stderr.lower()


def test_datasets_are_mounted_read_only_where_the_spec_says(lab: Lab) -> None:
    ro = lab.ssh("inference-01", "sudo touch /srv/models/probe")
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    rw = lab.ssh("vectordb-01", "sudo touch /srv/vectors/probe && echo ok")
    assert rw.stdout.strip() == "ok"
    assert (lab.names.dataset_dir("vectors") / "probe").exists()


def test_secrets_and_state_are_private(lab: Lab) -> None:
    assert stat.S_IMODE(lab.home.root.stat().st_mode) == 0o700
    for path in (lab.home.ssh_key, lab.home.state_file, lab.home.inventory):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    inventory = lab.home.inventory.read_text(encoding="utf-8")
    assert "PRIVATE KEY" not in inventory
    assert str(lab.home.ssh_key) in inventory


def test_status_reports_every_node_running(lab: Lab) -> None:
    proc = lab.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    nodes = json.loads(proc.stdout)["nodes"]
    assert {n["name"]: n["state"] for n in nodes} == dict.fromkeys(lab.topo.nodes, "running")


def test_second_up_changes_nothing(lab: Lab) -> None:
    proc = lab.cli("up", "--no-harden")
    assert proc.returncode == 0, proc.stderr
    assert "up: nothing to change" in proc.stderr
    assert "  + " not in proc.stderr


def test_tampered_router_policy_is_restored_by_up(lab: Lab) -> None:
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.names.router_ns,
            "nft",
            "insert",
            "rule",
            "inet",
            lab.names.nft_table,
            "forward",
            "accept",
        ],
        check=True,
    )
    proc = lab.cli("up", "--no-harden")
    assert proc.returncode == 0, proc.stderr
    assert "+ nftables" in proc.stderr
    test_denied_flow_is_dropped_by_the_router(lab)


def test_up_resumes_after_being_killed_midway(lab: Lab) -> None:
    down = lab.cli("down")
    assert down.returncode == 0, down.stderr
    exe = Path(sys.executable).with_name("mlseclab")
    proc = subprocess.Popen(
        [str(exe), "up", "--no-harden", "-f", str(lab.spec_path)],
        cwd=ROOT,
        env={**os.environ, **lab.env},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "+ container" in line:  # the first node is booting: kill the run here
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = lab.cli("up", "--no-harden")
    assert resumed.returncode == 0, resumed.stderr
    test_every_node_runs_systemd_and_answers_ssh_with_a_pinned_host_key(lab)


def test_down_removes_everything_and_keeps_protected_data(lab: Lab) -> None:
    (lab.names.dataset_dir("models") / "weights.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    for _ in range(2):  # safe to repeat
        proc = lab.cli("down")
        assert proc.returncode == 0, proc.stderr
        assert leftovers(lab.names) == []
    assert (lab.names.dataset_dir("models") / "weights.gguf").read_bytes()[:4] == b"GGUF"
    assert not lab.names.dataset_dir("logs").exists()  # not protected: removed
    assert not lab.home.state_file.exists()
    # back up for the fixture's own final down (which also purges the data)
    assert lab.cli("up", "--no-harden").returncode == 0


def test_a_failing_test_still_cleans_up(tmp_path: Path) -> None:
    text = (SPECS / "valid" / "minimal.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "lab: {name: mini}",
        "lab:\n  name: failing\n  local:\n"
        f"    datasets_root: {tmp_path / 'data'}\n    uplink_cidr: 10.90.255.0/30",
    )
    spec = write_lab(tmp_path, text)
    env = {
        **os.environ,
        "MLSECLAB_FAILING_SPEC": str(spec),
        "MLSECLAB_STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "e2e" / "deliberately_failing.py"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "failing on purpose with the lab up" in proc.stdout
    assert leftovers(LocalNames("failing", tmp_path / "data")) == []
