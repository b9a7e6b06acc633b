"""The service's settings (settings.json, no secrets) and its systemd credentials."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Settings:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def credential(name: str) -> str:
    """A secret systemd handed over with LoadCredential= (never the environment or argv)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise RuntimeError(f"credential {name}: not started by systemd (no CREDENTIALS_DIRECTORY)")
    return (Path(directory) / name).read_text(encoding="utf-8").strip()
