"""End-to-end tests stand real labs up on this host: Linux and root only."""

from __future__ import annotations

import os
import platform

import pytest

E2E_REASON = "end-to-end tests need Linux and root (namespaces, bridges, systemd-nspawn)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if platform.system() == "Linux" and os.geteuid() == 0:
        return
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=E2E_REASON))
