"""What up writes for the next steps: inventory, ssh_config, router ruleset, graph."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.labs import REFERENCE
from mlseclab.cli import main
from mlseclab.errors import LabError
from mlseclab.graph import to_dot
from mlseclab.inventory import parse_inventory, render_inventory, render_ssh_config
from mlseclab.spec import load_spec
from mlseclab.state import LabHome
from mlseclab.targets.local.names import LocalNames
from mlseclab.targets.local.target import LocalTarget
from mlseclab.topology import derive


@pytest.fixture
def topo():  # type: ignore[no-untyped-def]
    return derive(load_spec(REFERENCE))


def test_inventory_groups_hosts_and_refers_to_keys_by_path(topo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = LabHome("reference", tmp_path)
    doc = parse_inventory(render_inventory(topo, home, "container", "local"))
    children = doc["all"]["children"]
    assert set(children) >= {
        "gateway",
        "inference",
        "vectordb",
        "rag",
        "observability",
        "runtime_container",
    }
    rag = children["rag"]["hosts"]["rag-01"]
    assert rag["ansible_host"] == "10.66.10.14"
    assert rag["mlseclab_kind"] == "container"
    assert rag["mlseclab_mounts"] == [{"dataset": "corpora", "path": "/srv/corpora", "mode": "ro"}]
    assert {r["flow"] for r in rag["mlseclab_ingress"]} == {
        "gateway-to-rag",
        "metrics-scrape",
        "operator-ssh",
    }
    assert doc["all"]["vars"]["ansible_ssh_private_key_file"] == str(home.ssh_key)
    text = render_inventory(topo, home, "container", "local")
    assert "PRIVATE KEY" not in text and "password" not in text.lower()


def test_inventory_hands_the_roles_the_python_constants(topo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The inference role refuses the suffixes mlseclab refuses: one list, passed in."""
    from mlseclab.ml.catalog import PICKLE_SUFFIXES

    doc = parse_inventory(
        render_inventory(topo, LabHome("reference", tmp_path), "container", "local")
    )
    assert doc["all"]["vars"]["mlseclab_pickle_suffixes"] == list(PICKLE_SUFFIXES)
    defaults = (Path(__file__).parents[2] / "roles/inference/defaults/main.yml").read_text()
    assert 'inference_refused_suffixes: "{{ mlseclab_pickle_suffixes }}"' in defaults


def test_mounts_of_a_dataset(topo) -> None:  # type: ignore[no-untyped-def]
    assert topo.mounts_of("models") == ("inference-01",)
    assert topo.mounts_of("models", writers_only=True) == ()
    assert topo.mounts_of("vectors", writers_only=True) == ("vectordb-01",)
    assert topo.mounts_of("nothing") == ()


def test_pinned_model_files_compare_the_dataset_file_with_its_pin(tmp_path: Path) -> None:
    from mlseclab.ml.catalog import BUILTIN
    from mlseclab.targets.local.artifacts import pinned_model_files

    spec = load_spec(REFERENCE)
    pinned = {p.name: p for p in pinned_model_files(spec, lambda ds: tmp_path / ds)}
    assert set(pinned) == set(spec.models)
    one = next(iter(pinned.values()))
    assert one.path.parent == tmp_path / one.dataset
    assert one.path.name in {pin.file for pin in BUILTIN.values()}
    assert one.found is None and not one.matches  # absent
    one.path.parent.mkdir(parents=True)
    one.path.write_bytes(b"not the model")
    fresh = next(
        p for p in pinned_model_files(spec, lambda ds: tmp_path / ds) if p.name == one.name
    )
    assert fresh.found is not None and fresh.found != fresh.sha256 and not fresh.matches


def test_ssh_config_pins_host_keys(topo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = LabHome("reference", tmp_path)
    text = render_ssh_config(topo, home)
    assert "Host rag-01 rag-01.lab.internal 10.66.10.14\n    HostName 10.66.10.14" in text
    assert text.count("StrictHostKeyChecking yes") == 5
    assert f'UserKnownHostsFile "{home.known_hosts}"' in text


def test_ssh_reads_the_quoted_paths_as_the_lab_s_files(topo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """ssh's own parser (``ssh -G``) resolves the quoted paths to the state files."""
    home = LabHome("reference", tmp_path / "state dir")
    config = tmp_path / "ssh_config"
    config.write_text(render_ssh_config(topo, home), encoding="utf-8")
    shown = subprocess.run(
        ["ssh", "-G", "-F", str(config), "rag-01"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert f"identityfile {home.ssh_key}" in shown
    assert f"userknownhostsfile {home.known_hosts}" in shown
    assert "hostname 10.66.10.14" in shown and "user mlseclab" in shown
    assert "proxycommand" not in " ".join(shown)


@pytest.mark.parametrize("bad", ['/tmp/a"b', "/tmp/a%hb", "/tmp/a\nb"])
def test_a_state_path_ssh_would_misread_is_refused(topo, tmp_path: Path, bad: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LabError, match="ssh_config cannot carry"):
        render_ssh_config(topo, LabHome("reference", Path(bad)))


def test_router_ruleset_has_one_rule_per_resolved_flow_and_drops_the_rest(
    topo, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    target = LocalTarget(topo.spec, topo, LabHome("reference", tmp_path))
    ruleset = target.router_ruleset()
    assert "type filter hook forward priority filter; policy drop;" in ruleset
    # the flows, and the observability node's scrape of the router's drop counters
    assert ruleset.count(" accept comment ") == len(topo.rules) + 1
    assert (
        "ip saddr { 10.66.10.15 } ip daddr 10.66.10.1 tcp dport 9100 ct state new counter "
        'accept comment "metrics-scrape -> router"'
    ) in ruleset
    # drops are counted by the segment they came from; the operator's uplink apart
    assert 'iifname "br-edge" counter drop comment "dropped from edge: not an allowed flow"' in (
        ruleset
    )
    assert (
        'iifname "uplink" counter drop comment "dropped from operator: to the router itself"'
        in (ruleset)
    )
    assert (
        "ip saddr { 10.66.10.14, 10.66.50.14 } ip daddr { 10.66.40.13 } tcp dport 5432 "
        'ct state new counter accept comment "rag-to-vectordb -> vectordb-01"'
    ) in ruleset
    assert "ip daddr { 10.66.20.11 } tcp dport 443" in ruleset  # any source: no saddr
    assert 'counter comment "dropped: not an allowed flow"' in ruleset


def test_names_fit_the_kernel_limits(topo) -> None:  # type: ignore[no-untyped-def]
    names = LocalNames("a-long-lab-name-of-24chr", Path("/var/lib/mlseclab"))
    assert len(names.host_uplink) <= 15
    for seg in topo.spec.networks:
        assert len(names.bridge(seg)) <= 15
    for node in topo.nodes:
        assert len(names.node_port(node, 3)) <= 15
    assert len({names.node_port(n, 0) for n in topo.nodes}) == len(topo.nodes)


def test_dot_has_a_cluster_per_segment_and_an_edge_per_flow(topo) -> None:  # type: ignore[no-untyped-def]
    dot = to_dot(topo)
    for seg in topo.spec.networks:
        assert f'subgraph "cluster_{seg}"' in dot
    assert '"rag-01@app" -> "vectordb-01@data" [label="tcp/5432"]' in dot
    assert '"any" -> "gateway-01@edge" [label="tcp/443"]' in dot
    assert '"operator" -> "obs-01@mgmt" [label="tcp/22"]' in dot
    assert dot.count('"any" -> ') == 1  # only clients-to-gateway comes from anywhere


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")
def test_graph_command_writes_svg_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", "-f", str(REFERENCE), "-o", str(tmp_path)]) == 0
    svg = (tmp_path / "reference.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "vectordb&#45;01 (vectordb)" in svg
    assert (tmp_path / "reference.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["graph", "-f", str(REFERENCE), "--format", "gif"]) == 1
    assert "unknown format 'gif'" in capsys.readouterr().err


def test_plan_json_lists_every_resource(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(REFERENCE), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    kinds = [r["kind"] for r in plan["resources"]]
    assert kinds.count("container") == 5
    assert kinds.count("bridge") == 6
    assert kinds.count("dataset") == 4
    assert plan["offline"] is False
    assert {r["action"] for r in plan["resources"]} <= {"create", "exists"}
