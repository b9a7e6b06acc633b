"""Shared fixtures: every test runs with its own state directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep .mlseclab/ of each unit test in its own temporary directory."""
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(tmp_path / "state"))
    yield
