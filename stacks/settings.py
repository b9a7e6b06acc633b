"""What the stack needs beyond the lab spec: per-site settings read from Pulumi config.

``__main__`` fills this from ``mlseclab:*`` config keys; tests build it directly.
Nothing secret lives here except ``api_token``, which stays a Pulumi secret.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi

from mlseclab.spec import DATASETS_ROOT, LabSpec

#: The key mocks and the offline plan use: never a real key.
TEST_SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMlsEcLabTestKeyNotForUse000000000000000 mlseclab-test"
)


@dataclass(frozen=True)
class StackSettings:
    ssh_public_key: str
    #: CIDRs the operator connects from (flows whose source is ``operator``).
    #: Empty: the mgmt segment's gateway, i.e. operators come in through the lab router.
    operator_sources: tuple[str, ...] = ()
    #: DNS servers for cloud-init. Empty: the mgmt segment's gateway.
    dns_servers: tuple[str, ...] = ()
    #: Host directory under which the pve_host role mounts the datasets:
    #: ``<root>/<lab>/datasets/<name>`` (read-write) and ``<root>/<lab>/ro/<name>``
    #: (a read-only bind mount of the same dataset).
    datasets_root: str = DATASETS_ROOT
    #: bridge mode: create the VLAN-aware lab bridge on each node (False: it exists already).
    manage_bridge: bool = True
    #: physical ports of the lab bridge (a trunk to the lab router), empty for a host-only lab.
    bridge_ports: tuple[str, ...] = ()
    #: the template has qemu-guest-agent installed (otherwise the agent stays off: bpg#449).
    template_agent: bool = False
    #: create the lab's role, user, token and operator roles.
    manage_access: bool = True
    #: the Proxmox API token as a Pulumi secret; None: the provider reads PROXMOX_VE_API_TOKEN.
    api_token: pulumi.Input[str] | None = None
    #: the API endpoint, when it differs from lab.proxmox.endpoint (PROXMOX_VE_ENDPOINT).
    endpoint: str | None = None


def short_name(name: str, limit: int) -> str:
    """``name`` if it fits in ``limit`` characters, else a stable shortened form."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:4]
    return f"{name[: limit - 5].rstrip('-')}-{digest}"


def ssh_key_path(root: Path, lab: str) -> Path:
    return root / ".mlseclab" / lab / "ssh" / "id_ed25519.pub"


def settings_from_config(config: pulumi.Config, spec: LabSpec, root: Path) -> StackSettings:
    """Read ``mlseclab:*`` config; the SSH key from config or the lab's key file."""
    key = config.get("sshPublicKey")
    if not key:
        path = ssh_key_path(root, spec.lab.name)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError:
            raise ValueError(
                f"no SSH public key: set mlseclab:sshPublicKey or create {path} "
                "(mlseclab creates it on the first run)"
            ) from None
    if not key.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
        raise ValueError("mlseclab:sshPublicKey is not an OpenSSH public key")
    endpoint = config.get("endpoint")
    if endpoint and not endpoint.startswith("https://"):
        raise ValueError(
            "mlseclab:endpoint is not https://: the API token would cross the network in "
            "cleartext; use https://HOST:8006/"
        )
    return StackSettings(
        ssh_public_key=key,
        operator_sources=tuple(config.get_object("operatorSources") or ()),
        dns_servers=tuple(config.get_object("dnsServers") or ()),
        datasets_root=config.get("datasetsRoot") or StackSettings.datasets_root,
        manage_bridge=config.get_bool("manageBridge") is not False,
        bridge_ports=tuple(config.get_object("bridgePorts") or ()),
        template_agent=bool(config.get_bool("templateAgent")),
        manage_access=config.get_bool("manageAccess") is not False,
        api_token=config.get_secret("proxmoxToken"),
        endpoint=endpoint,
    )
