"""End-to-end tests stand real labs up on this host: Linux and root only."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

E2E_REASON = "end-to-end tests need Linux and root (namespaces, bridges, systemd-nspawn)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if platform.system() == "Linux" and os.geteuid() == 0:
        return
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=E2E_REASON))


@pytest.fixture(scope="session")
def reports_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """verify and drift write their reports here, never into the checkout's reports/."""
    path = tmp_path_factory.mktemp("reports")
    os.environ["MLSECLAB_REPORTS_DIR"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _reports_outside_the_checkout(reports_dir: Path) -> None:
    """Also for `up`, which ends with verify."""
