"""ssh's ControlPath must fit a unix socket path (107 bytes) wherever the state lives."""

from __future__ import annotations

import os
from pathlib import Path

from mlseclab.state import LabHome

LONGEST_IPV4 = "255.255.255.255"
SSH_TEMP_SUFFIX = 17  # ssh binds "<path>.<16 random chars>" first, then renames


def _socket(home: LabHome) -> str:
    return home.control_path.replace("%h", LONGEST_IPV4)


def test_a_short_state_dir_keeps_the_sockets_with_the_state(tmp_path: Path) -> None:
    home = LabHome("lab", tmp_path / "s" / "lab")
    assert home.control_path == f"{home.root.resolve()}/cm-%h"
    assert len(_socket(home)) + SSH_TEMP_SUFFIX <= 107
    home.ensure_control_dir()  # nothing to create: the state dir is made by LabHome.ensure


def test_a_deep_state_dir_falls_back_to_a_private_short_dir(tmp_path: Path) -> None:
    home = LabHome("hard", tmp_path / ("x" * 80) / "state" / "hard")
    assert not home.control_path.startswith(str(tmp_path))
    assert len(_socket(home)) + SSH_TEMP_SUFFIX <= 107
    home.ensure_control_dir()
    directory = Path(home.control_path).parent
    assert directory.is_dir() and (directory.stat().st_mode & 0o777) == 0o700
    assert directory.stat().st_uid == os.getuid()
