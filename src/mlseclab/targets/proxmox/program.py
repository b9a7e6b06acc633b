"""Where the Pulumi program is, how to import its modules, and the names both sides share.

The program (``stacks/``) does not import this package: the driver loads
``stacks.*`` by name (:func:`stacks_module`) and reads what the program owns
from there (``stacks.outputs`` keys, ``stacks.ignored`` table, ``stacks.access``
privileges).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

from mlseclab.errors import TargetError

PROJECT = "mlseclab"
PLUGIN = "proxmoxve"
PLUGIN_VERSION = "8.6.0"
TOKEN_ENV = "PROXMOX_VE_API_TOKEN"  # noqa: S105 - a variable name
ENDPOINT_ENV = "PROXMOX_VE_ENDPOINT"
TOKEN_CONFIG = "mlseclab:proxmoxToken"  # noqa: S105 - a config key

#: src/mlseclab/targets/proxmox/program.py -> the checkout root
_CHECKOUT = Path(__file__).resolve().parents[4]


def project_dir() -> Path:
    """The directory holding Pulumi.yaml and stacks/: $MLSECLAB_PROJECT_DIR, the source
    checkout this package runs from, or the current directory."""
    candidates = []
    if env := os.environ.get("MLSECLAB_PROJECT_DIR"):
        candidates.append(Path(env))
    candidates += [_CHECKOUT, Path.cwd()]
    for c in candidates:
        if (c / "Pulumi.yaml").is_file() and (c / "stacks" / "__main__.py").is_file():
            return c
    raise TargetError(
        "cannot find the Pulumi program (Pulumi.yaml and stacks/); run mlseclab from its "
        "checkout or set MLSECLAB_PROJECT_DIR to it"
    )


def stacks_module(name: str) -> ModuleType:
    """Import ``stacks.<name>`` from the project directory."""
    root = str(project_dir())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        return importlib.import_module(f"stacks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("pulumi", "pulumi_proxmoxve"):
            raise TargetError(
                f"the Python package {exc.name} is missing; install the Proxmox extra: "
                "pip install 'mlseclab[proxmox]'"
            ) from None
        raise
