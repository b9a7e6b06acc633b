"""A valid lab spec of any size: the reference lab with more nodes of each role.

``big_spec_text(n)`` keeps the reference lab's datasets, flows, models and
posture, gives each segment a /20 (room for 4093 nodes) and adds nodes
round-robin over the five roles, each a copy of the reference node of its role
with its own addresses and vm_id. Tests and ``bench/validate.py`` use it to
check that validation scales with the number of nodes.
"""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import yaml

from helpers.labs import REFERENCE

ROLES = ("gateway", "inference", "vectordb", "rag", "observability")
#: Segment number (10.66.<16 * n>.0/20) of each reference network.
SEGMENTS = {"mgmt": 0, "edge": 1, "inference": 2, "data": 3, "app": 4, "obs": 5}
FIRST_HOST = 10  # node k's addresses are <segment>.0 + FIRST_HOST + k (clear of the gateway .1)


def big_spec(nodes: int, name: str = "big") -> dict[str, Any]:
    """The reference lab as data, scaled to ``nodes`` nodes: 5 (one per role) to 4000."""
    if not len(ROLES) <= nodes <= 4000:
        raise ValueError(f"nodes must be 5-4000 (each flow needs its roles), got {nodes}")
    ref: dict[str, Any] = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    by_role = {node["role"]: (n, node) for n, node in ref["nodes"].items()}
    spec = copy.deepcopy(ref)
    spec["lab"]["name"] = name
    spec["networks"] = {
        seg: {**ref["networks"][seg], "cidr": f"10.66.{16 * i}.0/20"} for seg, i in SEGMENTS.items()
    }
    bases = {seg: ipaddress.IPv4Address(f"10.66.{16 * i}.0") for seg, i in SEGMENTS.items()}
    spec["nodes"] = {}
    per_role: dict[str, int] = {}
    for k in range(nodes):
        role = ROLES[k % len(ROLES)]
        per_role[role] = per_role.get(role, 0) + 1
        ref_name, ref_node = by_role[role]
        node = copy.deepcopy(ref_node)
        node["vm_id"] = 10_000 + k
        node["nics"] = [
            {**nic, "ip": str(bases[nic["network"]] + FIRST_HOST + k)} for nic in ref_node["nics"]
        ]
        prefix = ref_name.rsplit("-", 1)[0]
        spec["nodes"][f"{prefix}-{per_role[role]:02d}"] = node
    return spec


def big_spec_text(nodes: int, name: str = "big") -> str:
    return yaml.safe_dump(big_spec(nodes, name), sort_keys=False, width=100)


def write_big_spec(directory: Path, nodes: int, name: str = "big") -> Path:
    path = directory / f"lab-{nodes}.yaml"
    path.write_text(big_spec_text(nodes, name), encoding="utf-8")
    return path
