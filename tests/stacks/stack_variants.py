"""Valid lab specs derived from the reference one, for hypothesis.

Each variant is built as data from the reference spec and validated as a
``LabSpec`` with every whole-lab rule: only valid labs come out.
"""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import yaml
from hypothesis import assume
from hypothesis import strategies as st

from mlseclab.spec import LabSpec, check_rules

REFERENCE = Path(__file__).resolve().parents[2] / "inventories" / "reference" / "lab.yaml"

ROLES_SEGMENT = {
    "gateway": "edge",
    "inference": "inference",
    "vectordb": "data",
    "rag": "app",
    "observability": "obs",
}


def reference_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    return data


def _rebase(data: dict[str, Any], second_octet: int) -> None:
    """Move every segment and address from 10.66.x.y to 10.<second_octet>.x.y."""

    def move(text: str) -> str:
        return text.replace("10.66.", f"10.{second_octet}.", 1)

    for seg in data["networks"].values():
        seg["cidr"] = move(seg["cidr"])
    for node in data["nodes"].values():
        for nic in node["nics"]:
            nic["ip"] = move(nic["ip"])


def _prune_flows(data: dict[str, Any]) -> None:
    roles = {n["role"] for n in data["nodes"].values()}
    names = set(data["nodes"])
    ok = roles | names | {"operator", "any", "all"}
    data["flows"] = [f for f in data["flows"] if f["from"] in ok and f["to"] in ok]


@st.composite
def lab_specs(draw: st.DrawFn) -> LabSpec:
    data = copy.deepcopy(reference_data())
    data["lab"]["target"] = "proxmox"
    px = data["lab"]["proxmox"]
    px["network_mode"] = draw(st.sampled_from(["bridge", "sdn"]))
    px["nodes"] = draw(
        st.sampled_from([["pve-01"], ["pve-01", "pve-02"], ["pve-01", "pve-02", "pve-03"]])
    )
    if draw(st.booleans()):
        px["template"] = {"tag": "debian-13-cloudinit"}
    # VLAN ids: distinct, anywhere in range.
    vlans = draw(
        st.lists(
            st.integers(1, 4094),
            min_size=len(data["networks"]),
            max_size=len(data["networks"]),
            unique=True,
        )
    )
    for seg, vlan in zip(data["networks"].values(), vlans, strict=True):
        seg["vlan"] = vlan
    _rebase(data, draw(st.integers(1, 254)))
    # Remove some nodes (keep at least one), then add new ones.
    names = sorted(data["nodes"])
    keep = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    data["nodes"] = {n: data["nodes"][n] for n in names if n in keep}
    for i in range(draw(st.integers(0, 3))):
        role = draw(st.sampled_from(sorted(ROLES_SEGMENT)))
        seg = ROLES_SEGMENT[role]
        host = 100 + i
        mgmt_net = ipaddress.IPv4Network(data["networks"]["mgmt"]["cidr"])
        svc_net = ipaddress.IPv4Network(data["networks"][seg]["cidr"])
        node: dict[str, Any] = {
            "role": role,
            "kind": "vm",
            "cpu": 2,
            "memory": 2048,
            "nics": [
                {"network": "mgmt", "ip": str(mgmt_net.network_address + host)},
                {"network": seg, "ip": str(svc_net.network_address + host)},
            ],
            "tags": draw(st.sampled_from([[], ["training"]])),
        }
        if draw(st.booleans()):
            node["vm_id"] = 7000 + i
        data["nodes"][f"extra-{role[:4]}-{i}"] = node
    # GPUs and mounts, on any node.
    for node in data["nodes"].values():
        node.pop("gpu", None)
        if draw(st.booleans()):
            node["gpu"] = {
                "mapping": draw(st.sampled_from(["gpu-a", "gpu-inference"])),
                "count": draw(st.integers(1, 2)),
            }
        datasets = draw(
            st.lists(st.sampled_from(sorted(data["datasets"])), unique=True, max_size=2)
        )
        node["mounts"] = [
            {"dataset": d, "path": f"/srv/{d}", "mode": draw(st.sampled_from(["ro", "rw"]))}
            for d in datasets
        ]
    for ds in data["datasets"].values():
        ds["protect"] = draw(st.booleans())
    _prune_flows(data)
    spec = LabSpec.model_validate(data)
    assume(not list(check_rules(spec)))
    return spec
