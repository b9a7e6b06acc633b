"""How to import the Pulumi program's modules (found by :func:`mlseclab.checkout.project_dir`),
and the names both sides share.

The program (``stacks/``) does not import this package: the driver loads
``stacks.*`` by name (:func:`stacks_module`) and reads what the program owns
from there (``stacks.outputs`` keys, ``stacks.ignored`` table, ``stacks.access``
privileges).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from mlseclab import checkout
from mlseclab.errors import TargetError

PROJECT = "mlseclab"
PLUGIN = "proxmoxve"
PLUGIN_VERSION = "8.6.0"
#: The oldest Pulumi SDK and CLI the program runs on: ResourceOptions(replace_with=) (the SDN
#: applier) first appears in the 3.207.0 Python SDK; Stack.preview_refresh (drift) is older.
PULUMI_MIN = (3, 207)
TOKEN_ENV = "PROXMOX_VE_API_TOKEN"  # noqa: S105 - a variable name
ENDPOINT_ENV = "PROXMOX_VE_ENDPOINT"
TOKEN_CONFIG = "mlseclab:proxmoxToken"  # noqa: S105 - a config key


def stacks_module(name: str) -> ModuleType:
    """Import ``stacks.<name>`` from the project directory."""
    root = str(checkout.project_dir())
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
