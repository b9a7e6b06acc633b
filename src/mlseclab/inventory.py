"""The Ansible inventory and ssh_config a provisioned lab hands to the next steps.

Both targets produce the same inventory: groups by role, host vars from the
spec and the derived topology. It refers to key files by path and never holds
a secret.

Every string value in the inventory is tagged ``!unsafe``: Ansible treats it as
data and never evaluates ``{{ }}`` or ``{% %}`` in it, whatever the spec held.
The schema already keeps template syntax out of the spec (alphabets.py); this is
the second wall, so that no spec string can become code on the controller.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from mlseclab.errors import LabError
from mlseclab.ml.catalog import PICKLE_SUFFIXES, model_file
from mlseclab.spec import DATASETS_ROOT, OPERATOR_USER, LabSpec, Role
from mlseclab.state import STATE_ROOT_ENV, LabHome, write_private
from mlseclab.topology import Rule, Topology

PVE_HOSTS_GROUP = "pve_hosts"
UNSAFE_TAG = "!unsafe"


class _InventoryDumper(yaml.SafeDumper):
    """safe_dump, with every string value written as an ``!unsafe`` scalar."""


def _unsafe_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(UNSAFE_TAG, value, style="'")


_InventoryDumper.add_representer(str, _unsafe_str)


def _keys_plain(dumper: yaml.SafeDumper, mapping: dict[Any, Any]) -> yaml.MappingNode:
    """Keys (host, group and variable names) stay plain strings: Ansible never templates
    them, and a tagged key would not name a host."""
    node = dumper.represent_mapping("tag:yaml.org,2002:map", mapping.items())
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag == UNSAFE_TAG:
            key.tag = "tag:yaml.org,2002:str"
            key.style = None
    return node


_InventoryDumper.add_representer(dict, _keys_plain)


class _InventoryLoader(yaml.SafeLoader):
    """Reads an inventory back as plain data: an ``!unsafe`` scalar is its string."""


_InventoryLoader.add_constructor(
    UNSAFE_TAG,
    lambda loader, node: loader.construct_scalar(node),  # type: ignore[arg-type]
)


def parse_inventory(text: str) -> Any:
    """The inventory as plain data (what Ansible sees, without its unsafe marking)."""
    return yaml.load(text, Loader=_InventoryLoader)  # noqa: S506 - a SafeLoader subclass


def _rule_vars(rule: Rule) -> dict[str, Any]:
    return {
        "flow": rule.flow,
        "proto": rule.proto,
        "port": rule.port,
        "sources": list(rule.source_addresses),  # [] means any
        "destinations": list(rule.destination_addresses),
        "destination_node": rule.destination,
    }


def served_models(spec: LabSpec) -> list[dict[str, Any]]:
    """What the inference role serves: name, file, sha256, task, dataset (no secrets)."""
    listed = []
    for name, m in spec.models.items():
        listed.append(
            {
                "name": name,
                "file": model_file(m.source),
                "sha256": m.sha256,
                "task": m.task,
                "dataset": m.dataset,
            }
        )
    return listed


def dataset_vars(spec: LabSpec) -> dict[str, Any]:
    """The spec's datasets as the pve_host role reads them: properties, protect, snapshots."""
    return {
        name: {
            "description": d.description,
            "protect": d.protect,
            "properties": d.properties.model_dump(),
            "snapshots": d.snapshots.model_dump(),
        }
        for name, d in spec.datasets.items()
    }


def datasets_root(spec: LabSpec, target: str) -> str:
    """Where datasets live on the host: the spec's ``lab.local.datasets_root`` on the local
    target; on Proxmox the stack's default (``StackSettings.datasets_root``)."""
    return spec.lab.local.datasets_root if target == "local" else DATASETS_ROOT


def host_vars(topo: Topology, node: str, runtime_kind: str) -> dict[str, Any]:
    n = topo.nodes[node]
    spec_node = topo.spec.nodes[node]
    return {
        "ansible_host": n.mgmt.ip,
        "mlseclab_role": n.role,
        "mlseclab_kind": runtime_kind,
        "mlseclab_spec_kind": spec_node.kind.value,
        "mlseclab_mgmt_ip": n.mgmt.ip,
        "mlseclab_service_ips": [i.ip for i in n.service],
        "mlseclab_nics": [
            {
                "name": i.name,
                "network": i.network,
                "purpose": i.purpose.value,
                "ip": i.ip,
                "prefix": i.prefixlen,
                "gateway": i.gateway,
                "vlan": i.vlan,
            }
            for i in n.interfaces
        ],
        "mlseclab_routes": [{"to": r.destination, "via": r.via, "dev": r.dev} for r in n.routes],
        "mlseclab_mounts": [m.model_dump() for m in spec_node.mounts],
        "mlseclab_gpu": spec_node.gpu.model_dump() if spec_node.gpu else None,
        # the model server (the inference role's inference_engine); None on other roles
        "mlseclab_engine": spec_node.engine.value if spec_node.role is Role.INFERENCE else None,
        "mlseclab_ingress": [_rule_vars(r) for r in topo.ingress(node)],
        "mlseclab_egress": [_rule_vars(r) for r in topo.egress(node)],
    }


def render_inventory(topo: Topology, home: LabHome, runtime_kind: str, target: str) -> str:
    """The inventory of a lab that runs on ``target`` (local or proxmox, as ``up`` decided
    it, not necessarily the spec's ``lab.target``), its nodes as ``runtime_kind``."""
    spec = topo.spec
    groups = topo.groups()
    children: dict[str, Any] = {
        group: {
            "hosts": {
                h: (host_vars(topo, h, runtime_kind) if group == topo.nodes[h].role else None)
                for h in hosts
            }
        }
        for group, hosts in groups.items()
    }
    children[f"runtime_{runtime_kind}"] = {"hosts": {h: None for h in topo.nodes}}
    # The Proxmox hypervisors (site.yml's pve_host play). The spec does not know their
    # addresses or how to log in to them, so the group is empty here: an operator lists
    # them in a second inventory (`-i`), with mlseclab_mgmt_ip per host.
    children[PVE_HOSTS_GROUP] = {"hosts": {}}
    doc = {
        "all": {
            "vars": {
                "ansible_user": OPERATOR_USER,
                "ansible_become": True,
                "ansible_ssh_private_key_file": str(home.ssh_key),
                "ansible_ssh_common_args": f"-F {shlex.quote(str(home.ssh_config))}",
                "ansible_python_interpreter": "/usr/bin/python3",
                "mlseclab_lab": spec.lab.name,
                "mlseclab_domain": spec.lab.domain,
                "mlseclab_target": target,
                # contracts the roles default to (ssh_operator_user, pve_host_datasets_root)
                "mlseclab_operator_user": OPERATOR_USER,
                "mlseclab_datasets_root": datasets_root(spec, target),
                "mlseclab_operator_address": topo.operator_address,
                "mlseclab_mgmt_network": spec.networks[spec.mgmt_segment_name()].cidr,
                "mlseclab_networks": {
                    name: {
                        "cidr": s.cidr,
                        "vlan": s.vlan,
                        "purpose": s.purpose.value,
                        "gateway": str(s.gateway_address),
                    }
                    for name, s in spec.networks.items()
                },
                "mlseclab_state_dir": str(home.root),
                "mlseclab_secrets_dir": str(home.root / "secrets"),
                "mlseclab_models": served_models(spec),
                "mlseclab_pickle_suffixes": list(PICKLE_SUFFIXES),
                "mlseclab_datasets": dataset_vars(spec),
            },
            "children": children,
        }
    }
    header = (
        "# Generated by mlseclab from the lab spec; do not edit (it is rewritten by up).\n"
        "# Secrets are never here: keys and credentials are referred to by path.\n"
    )
    return header + yaml.dump(
        doc, Dumper=_InventoryDumper, sort_keys=False, default_flow_style=False
    )


def ssh_config_path(path: str | Path) -> str:
    """A file path as one ssh_config argument: double-quoted; a path that ssh would read
    differently (a quote, a newline, or '%', which starts one of ssh's tokens) is refused."""
    text = str(path)
    bad = next((c for c in text if c in '"%\\' or not c.isprintable()), None)
    if bad is not None:
        raise LabError(
            f"{text!r}: the lab's state directory path holds {bad!r}, which ssh_config cannot "
            f"carry; set {STATE_ROOT_ENV} to a path of letters, digits, '/', '.', '_' and '-'"
        )
    return f'"{text}"'


def render_ssh_config(topo: Topology, home: LabHome) -> str:
    """Names and addresses come from the schema (DNS labels, a DNS domain, IPv4); paths are
    quoted. ``%h`` in ControlPath is ssh's own token, added after quoting the directory."""
    lines = ["# Generated by mlseclab: ssh -F " + str(home.ssh_config) + " NODE", ""]
    control = home.control_path.removesuffix("%h")
    control_path = ssh_config_path(control)[:-1] + '%h"'
    for node in topo.nodes.values():
        lines += [
            f"Host {node.name} {node.name}.{topo.spec.lab.domain} {node.mgmt.ip}",
            f"    HostName {node.mgmt.ip}",
            f"    User {OPERATOR_USER}",
            f"    IdentityFile {ssh_config_path(home.ssh_key)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {ssh_config_path(home.known_hosts)}",
            "    StrictHostKeyChecking yes",
            "    HostKeyAlias " + node.name,
            "    ConnectTimeout 5",
            "    ControlMaster auto",
            f"    ControlPath {control_path}",
            "    ControlPersist 60s",
            "",
        ]
    return "\n".join(lines)


def write_inventory(
    topo: Topology, home: LabHome, runtime_kind: str, target: str
) -> tuple[Path, Path]:
    write_private(home.inventory, render_inventory(topo, home, runtime_kind, target))
    write_private(home.ssh_config, render_ssh_config(topo, home))
    home.ensure_control_dir()
    return home.inventory, home.ssh_config
