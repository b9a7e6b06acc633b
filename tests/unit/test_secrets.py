"""Lab secrets: generated once, private, valid, and never changed by a second run."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

from helpers.labs import REFERENCE
from mlseclab.secrets import SERVICE_SECRETS, ensure_secrets, hash_key, paths
from mlseclab.spec import load_spec
from mlseclab.state import LabHome
from mlseclab.topology import derive


def test_secrets_are_private_stable_and_verifiable(tmp_path: Path) -> None:
    topo = derive(load_spec(REFERENCE))
    home = LabHome("reference", tmp_path / "reference")
    created = ensure_secrets(topo, home)
    assert "lab CA" in created and "certificate rag-01" in created
    p = paths(home)
    before = {f: f.read_bytes() for f in p.root.rglob("*") if f.is_file()}
    assert ensure_secrets(topo, home) == []  # converges
    assert {f: f.read_bytes() for f in p.root.rglob("*") if f.is_file()} == before
    assert stat.S_IMODE(p.root.stat().st_mode) == 0o700
    for name in SERVICE_SECRETS:
        assert stat.S_IMODE(p.service(name).stat().st_mode) == 0o600
    assert stat.S_IMODE(p.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.node_key("rag-01").stat().st_mode) == 0o600
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(p.ca_cert), str(p.node_cert("vectordb-01"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    san = subprocess.run(
        [
            "openssl",
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            str(p.node_cert("vectordb-01")),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "10.66.40.13" in san and "vectordb-01.lab.internal" in san


def test_gateway_gets_hashes_not_keys(tmp_path: Path) -> None:
    topo = derive(load_spec(REFERENCE))
    home = LabHome("reference", tmp_path / "reference")
    ensure_secrets(topo, home)
    p = paths(home)
    hashed = json.loads(p.client_hashes.read_text(encoding="utf-8"))
    key = p.client_key("operator").read_text(encoding="utf-8")
    assert hashed["operator"]["sha256"] == hash_key(key)
    assert key.strip() not in p.client_hashes.read_text(encoding="utf-8")


def test_a_certificate_is_reissued_when_the_node_changes_address(tmp_path: Path) -> None:
    home = LabHome("reference", tmp_path / "reference")
    ensure_secrets(derive(load_spec(REFERENCE)), home)
    text = REFERENCE.read_text(encoding="utf-8").replace("ip: 10.66.50.14", "ip: 10.66.50.24")
    moved = tmp_path / "lab.yaml"
    moved.write_text(text, encoding="utf-8")
    assert ensure_secrets(derive(load_spec(moved)), home) == ["certificate rag-01"]
