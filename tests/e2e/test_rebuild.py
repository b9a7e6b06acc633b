"""Rebuild, snapshots and restore on a real (provisioned, not hardened) local lab.

The lab is the reference lab renamed ``rebuild`` on 10.81.0.0/16. The tests run in
order: rebuild one node, refuse an unknown one, then down, snapshots and restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.labs import derived_lab_text, mlseclab, running_lab, write_lab
from mlseclab.state import LabHome
from mlseclab.targets.local.names import LocalNames

pytestmark = pytest.mark.e2e


@dataclass
class Lab:
    spec_path: Path
    home: LabHome
    names: LocalNames
    env: dict[str, str]

    def ssh(self, node: str, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.home.ssh_config), node, command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return mlseclab(*args, "-f", str(self.spec_path), env=self.env)

    def snapshots(self) -> list[dict[str, Any]]:
        proc = self.cli("snapshots", "--json")
        assert proc.returncode == 0, proc.stderr
        found: list[dict[str, Any]] = json.loads(proc.stdout)["snapshots"]
        return found

    def nspawn_pid(self, node: str) -> str:
        return (self.names.node_dir(node) / "nspawn.pid").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    # short paths: ssh's ControlPath (<state>/rebuild/cm-<40 hex>.<16>) must fit 107 bytes
    base = tmp_path_factory.mktemp("rb")
    spec_path = write_lab(base, derived_lab_text("rebuild", 81, base / "data"))
    state = base / "s"
    with running_lab(spec_path, state, harden=False):
        yield Lab(
            spec_path,
            LabHome("rebuild", state / "rebuild"),
            LocalNames("rebuild", base / "data"),
            {"MLSECLAB_STATE_DIR": str(state)},
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _contents(directory: Path) -> tuple[int, int]:
    """(files, bytes) under ``directory``: what a snapshot of it must hold. ``up`` puts the
    spec's pinned models into the models dataset, so it is more than the test's own file."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_rebuild_keeps_datasets_and_identity_and_wipes_the_root_filesystem(lab: Lab) -> None:
    weights = lab.names.dataset_dir("models") / "weights.gguf"
    weights.write_bytes(b"GGUF" + os.urandom(1 << 20))
    table = lab.names.dataset_dir("vectors") / "table.dat"
    table.write_bytes(os.urandom(1 << 16))
    before = {p: _sha256(p) for p in (weights, table)}
    models_contents = _contents(lab.names.dataset_dir("models"))
    marker = lab.ssh("inference-01", "sudo touch /root/marker && sudo test -e /root/marker")
    assert marker.returncode == 0, marker.stderr
    machine_id = lab.ssh("inference-01", "cat /etc/machine-id").stdout.strip()
    known_hosts = lab.home.known_hosts.read_text(encoding="utf-8")
    untouched = lab.nspawn_pid("vectordb-01")

    start = time.monotonic()
    proc = lab.cli("rebuild", "inference-01", "--no-harden")
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"rebuild of inference-01 (--no-harden): {took:.1f}s")

    assert {p: _sha256(p) for p in before} == before
    # ssh works with the pinned host key (StrictHostKeyChecking yes), and it is a new root
    gone = lab.ssh("inference-01", "sudo test -e /root/marker")
    assert gone.returncode == 1, gone.stderr
    assert lab.home.known_hosts.read_text(encoding="utf-8") == known_hosts
    assert lab.ssh("inference-01", "cat /etc/machine-id").stdout.strip() == machine_id
    inside = lab.ssh("inference-01", "sha256sum /srv/models/weights.gguf")
    assert inside.stdout.split()[0] == before[weights], inside.stderr
    assert lab.nspawn_pid("vectordb-01") == untouched  # only the named node was touched
    snaps = lab.snapshots()
    assert [(s["dataset"], s["reason"], s["nodes"]) for s in snaps] == [
        ("models", "rebuild", ["inference-01"])
    ]
    assert (snaps[0]["files"], snaps[0]["bytes"]) == models_contents


def test_rebuild_refuses_an_unknown_node(lab: Lab) -> None:
    proc = lab.cli("rebuild", "inference-02")
    assert proc.returncode == 1
    assert "has no node 'inference-02'; " in proc.stderr
    assert (
        "its nodes: gateway-01, inference-01, vectordb-01, rag-01, obs-01; "
        "did you mean 'inference-01'?"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_down_snapshots_protected_datasets_and_restore_brings_a_file_back(lab: Lab) -> None:
    weights = lab.names.dataset_dir("models") / "weights.gguf"
    digest = _sha256(weights)
    down = lab.cli("down")
    assert down.returncode == 0, down.stderr[-3000:]
    assert "dataset snapshots kept in" in down.stderr
    taken = {s["dataset"]: s for s in lab.snapshots() if s["reason"] == "down"}
    assert sorted(taken) == ["corpora", "models", "vectors"]  # logs is not protected
    assert lab.cli("up", "--no-harden").returncode == 0

    weights.unlink()
    left = _contents(lab.names.dataset_dir("models"))  # the pinned models up put there
    assert lab.ssh("inference-01", "test -e /srv/models/weights.gguf").returncode == 1
    wrong = lab.cli("restore", "models", "yesterday", "--yes")
    assert wrong.returncode == 1
    assert f"its snapshots: {taken['models']['id']}" in wrong.stderr

    restore = lab.cli("restore", "models", taken["models"]["id"], "--yes")
    assert restore.returncode == 0, restore.stderr[-3000:]
    assert _sha256(weights) == digest
    inside = lab.ssh("inference-01", "sha256sum /srv/models/weights.gguf")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.split()[0] == digest  # the node was started again on the new data
    pre = [s for s in lab.snapshots() if s["reason"] == "pre-restore"]
    assert len(pre) == 1 and pre[0]["dataset"] == "models" and pre[0]["files"] == left[0]
