"""The state directory as root: no symlink followed, no foreign directory chmodded or used."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from mlseclab.errors import LabError
from mlseclab.state import LabHome, write_private


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabHome:
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(tmp_path / "state"))
    return LabHome.for_lab("unit")


def test_ensure_makes_private_directories(home: LabHome) -> None:
    home.ensure()
    for d in (home.root.parent, home.root, home.ssh_dir, home.logs):
        assert _mode(d) == 0o700, d


def test_a_state_root_it_did_not_create_keeps_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"  # stands for MLSECLAB_STATE_DIR=/tmp
    shared.mkdir()
    shared.chmod(0o755)
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(shared))
    home = LabHome.for_lab("unit")
    home.ensure()
    assert _mode(shared) == 0o755
    assert _mode(home.root) == 0o700


def test_a_sticky_world_writable_state_root_is_used_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(shared))
    LabHome.for_lab("unit").ensure()
    assert _mode(shared) == 0o1777


def test_a_world_writable_state_root_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "open"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(shared))
    with pytest.raises(LabError, match="writable by other users and not sticky"):
        LabHome.for_lab("unit").ensure()
    assert _mode(shared) == 0o777
    assert not (shared / "unit").exists()


def test_a_state_root_that_is_a_symlink_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(tmp_path / "link"))
    with pytest.raises(LabError, match="is a symbolic link"):
        LabHome.for_lab("unit").ensure()
    assert not (real / "unit").exists()


def test_a_lab_directory_that_is_a_symlink_is_refused(home: LabHome, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    home.root.parent.mkdir(mode=0o700)
    home.root.symlink_to(elsewhere)
    with pytest.raises(LabError, match=r"unit's state directory\) is a symbolic link"):
        home.ensure()
    assert _mode(elsewhere) == 0o755
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_lab_directory_of_another_user_is_refused(home: LabHome) -> None:
    nobody = pwd.getpwnam("nobody")
    home.root.mkdir(parents=True, mode=0o755)
    os.chown(home.root, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(LabError, match=f"belongs to uid {nobody.pw_uid}, not to this user"):
        home.ensure()
    assert _mode(home.root) == 0o755
    assert not home.ssh_dir.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_state_root_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = pwd.getpwnam("nobody")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(theirs))
    with pytest.raises(LabError, match="point MLSECLAB_STATE_DIR at a directory of your own"):
        LabHome.for_lab("unit").ensure()
    assert not (theirs / "unit").exists()


def test_the_lock_does_not_follow_a_symlink(home: LabHome, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n", encoding="utf-8")
    home.ensure()
    (home.root / "lock").symlink_to(victim)
    with pytest.raises(LabError, match="is a symbolic link, not the lab's lock"), home.lock("up"):
        pytest.fail("the lock was taken through a symlink")
    assert victim.read_text(encoding="utf-8") == "precious\n"


def test_the_lock_refuses_a_hard_link(home: LabHome, tmp_path: Path) -> None:
    home.ensure()
    victim = home.root / "victim"  # a hard link needs the same filesystem
    victim.write_text("precious\n", encoding="utf-8")
    os.link(victim, home.root / "lock")
    with pytest.raises(LabError, match="not a plain file"), home.lock("up"):
        pytest.fail("the lock was taken through a hard link")
    assert victim.read_text(encoding="utf-8") == "precious\n"


def test_the_lock_refuses_a_directory(home: LabHome) -> None:
    home.ensure()
    (home.root / "lock").mkdir()
    with pytest.raises(LabError, match="is a directory, not the lab"), home.lock("up"):
        pytest.fail("a directory was taken as the lock")


def test_the_lock_is_a_private_file_naming_its_holder(home: LabHome) -> None:
    with home.lock("up"):
        lock = home.root / "lock"
        assert _mode(lock) == 0o600
        assert lock.read_text(encoding="utf-8").startswith("mlseclab up (pid ")


def test_write_private_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n", encoding="utf-8")
    d = tmp_path / "d"
    d.mkdir()
    (d / "state.json").symlink_to(victim)
    write_private(d / "state.json", "{}\n")
    assert victim.read_text(encoding="utf-8") == "precious\n"
    assert not (d / "state.json").is_symlink()
    assert (d / "state.json").read_text(encoding="utf-8") == "{}\n"
    assert _mode(d / "state.json") == 0o600


def test_write_private_refuses_a_symlinked_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(LabError, match="is a symbolic link"):
        write_private(tmp_path / "link" / "state.json", "{}\n")
    assert list(real.iterdir()) == []
