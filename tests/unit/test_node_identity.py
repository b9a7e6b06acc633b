"""A rebuilt node keeps its SSH host key and machine id (plain directories, no container)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlseclab.targets.local.names import LocalNames
from mlseclab.targets.local.nodes import IDENTITY_DIR, restore_identity, save_identity

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="restoring chowns to root")


def _node(names: LocalNames, layer: str) -> Path:
    etc = names.node_dir("rag-01") / layer / "etc"
    (etc / "ssh").mkdir(parents=True)
    return etc


def test_identity_survives_a_new_root(tmp_path: Path) -> None:
    names = LocalNames("ident", tmp_path)
    upper = _node(names, "upper")
    (upper / "ssh" / "ssh_host_ed25519_key").write_text("PRIVATE\n", encoding="utf-8")
    (upper / "ssh" / "ssh_host_ed25519_key").chmod(0o600)
    (upper / "ssh" / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAA\n", encoding="utf-8")
    (upper / "machine-id").write_text("0123456789abcdef0123456789abcdef\n", encoding="utf-8")
    assert save_identity("rag-01", names)
    kept = names.node_dir("rag-01") / IDENTITY_DIR
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    assert sorted(p.name for p in kept.iterdir()) == [
        "machine-id",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ]
    # the rebuild removes the upper directory; up mounts a fresh root from the image
    for p in sorted(names.node_dir("rag-01").joinpath("upper").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    assert not save_identity("rag-01", names)  # nothing left to save: the kept copy stays
    root = _node(names, "root")
    (root / "ssh" / "ssh_host_rsa_key").write_text("FROM THE IMAGE\n", encoding="utf-8")
    (root / "machine-id").write_text("", encoding="utf-8")
    assert restore_identity("rag-01", names)
    assert (root / "ssh" / "ssh_host_ed25519_key").read_text(encoding="utf-8") == "PRIVATE\n"
    assert stat.S_IMODE((root / "ssh" / "ssh_host_ed25519_key").stat().st_mode) == 0o600
    assert (root / "machine-id").read_text(encoding="utf-8").startswith("0123456789abcdef")
    assert not (root / "ssh" / "ssh_host_rsa_key").exists()  # only the node's own keys
    assert not kept.exists()
    assert not restore_identity("rag-01", names)  # used once
