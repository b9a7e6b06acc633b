"""Entry point for the Pulumi CLI: load the spec, build the lab, export the outputs.

Config (``Pulumi.<stack>.yaml`` or ``pulumi config set``), all optional:
``mlseclab:spec`` (default inventories/reference/lab.yaml), ``mlseclab:sshPublicKey``
(default .mlseclab/<lab>/ssh/id_ed25519.pub), ``mlseclab:operatorSources``,
``mlseclab:dnsServers``, ``mlseclab:datasetsRoot``, ``mlseclab:manageBridge``,
``mlseclab:bridgePorts``, ``mlseclab:templateAgent``, ``mlseclab:manageAccess``,
and the secret ``mlseclab:proxmoxToken`` (else PROXMOX_VE_API_TOKEN).
"""

import sys
from pathlib import Path

import pulumi

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mlseclab.spec import load_spec  # noqa: E402
from stacks.lab import build  # noqa: E402
from stacks.settings import settings_from_config  # noqa: E402

config = pulumi.Config("mlseclab")
spec_path = Path(config.get("spec") or "inventories/reference/lab.yaml")
if not spec_path.is_absolute():
    spec_path = ROOT / spec_path
spec = load_spec(spec_path, "proxmox")  # this program is the proxmox target: its rules apply
build(spec, settings_from_config(config, spec, ROOT)).export()
