"""What the inventory hands the pve_host role: the spec's datasets and the pve_hosts group."""

from __future__ import annotations

from pathlib import Path

from helpers.labs import REFERENCE, derived_lab_text, load_text
from mlseclab.inventory import PVE_HOSTS_GROUP, parse_inventory, render_inventory
from mlseclab.spec import DATASETS_ROOT, OPERATOR_USER, load_spec
from mlseclab.state import LabHome
from mlseclab.topology import derive


def test_inventory_carries_every_dataset_with_its_properties_and_policy(tmp_path: Path) -> None:
    doc = parse_inventory(
        render_inventory(
            derive(load_spec(REFERENCE)), LabHome("reference", tmp_path), "container", "local"
        )
    )
    datasets = doc["all"]["vars"]["mlseclab_datasets"]
    assert sorted(datasets) == ["corpora", "logs", "models", "vectors"]
    assert datasets["models"] == {
        "description": "model weights (GGUF, safetensors); read-only to the model server",
        "protect": True,
        "properties": {
            "recordsize": "1M",
            "compression": "off",
            "encryption": False,
            "atime": False,
        },
        "snapshots": {"keep": 7, "before_destroy": True},
    }
    assert datasets["logs"]["protect"] is False
    assert datasets["logs"]["snapshots"] == {"keep": 3, "before_destroy": True}
    assert datasets["vectors"]["properties"]["recordsize"] == "16K"


def test_inventory_follows_a_changed_dataset_spec(tmp_path: Path) -> None:
    text = derived_lab_text("inv", 81, tmp_path).replace(
        "properties: {recordsize: 16K, compression: lz4}",
        "properties: {recordsize: 8K, compression: zstd, encryption: true}",
    )
    spec = load_text(text)
    doc = parse_inventory(
        render_inventory(derive(spec), LabHome("inv", tmp_path), "container", "local")
    )
    vectors = doc["all"]["vars"]["mlseclab_datasets"]["vectors"]["properties"]
    assert vectors == {
        "recordsize": "8K",
        "compression": "zstd",
        "encryption": True,
        "atime": False,
    }


def test_pve_hosts_group_exists_and_holds_no_lab_node(tmp_path: Path) -> None:
    topo = derive(load_spec(REFERENCE))
    doc = parse_inventory(
        render_inventory(topo, LabHome("reference", tmp_path), "container", "local")
    )
    children = doc["all"]["children"]
    assert children[PVE_HOSTS_GROUP] == {"hosts": {}}
    assert not set(children[PVE_HOSTS_GROUP]["hosts"]) & set(topo.nodes)


def test_inventory_carries_the_operator_and_the_datasets_root(tmp_path: Path) -> None:
    spec = load_text(derived_lab_text("inv", 82, tmp_path / "data"))
    rendered = render_inventory(derive(spec), LabHome("inv", tmp_path), "container", "local")
    lab_vars = parse_inventory(rendered)["all"]["vars"]
    assert lab_vars["mlseclab_operator_user"] == OPERATOR_USER
    assert lab_vars["mlseclab_datasets_root"] == str(tmp_path / "data")
    assert f"mlseclab_datasets_root: !unsafe '{tmp_path / 'data'}'" in rendered
    proxmox = render_inventory(derive(spec), LabHome("inv", tmp_path), "vm", "proxmox")
    assert parse_inventory(proxmox)["all"]["vars"]["mlseclab_datasets_root"] == DATASETS_ROOT
