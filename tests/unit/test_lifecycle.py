"""Where a lab runs is what ``up`` recorded, for every command after it; no machine needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.labs import REFERENCE
from mlseclab.cli import build_parser
from mlseclab.commands.common import load_context
from mlseclab.errors import LabError
from mlseclab.posture.plugin import PostureLab
from mlseclab.spec import load_spec
from mlseclab.state import LabHome
from mlseclab.topology import derive

AFTER_UP = (
    ["harden"],
    ["harden", "--check"],
    ["verify"],
    ["drift"],
    ["rebuild"],
    ["snapshots"],
    ["restore", "models", "some-id"],
    ["status"],
    ["down"],
)


def _record(target: str) -> LabHome:
    home = LabHome.for_lab(load_spec(REFERENCE).lab.name)
    home.ensure()
    home.write_state({"lab": home.lab, "target": target, "phase": "ready"})
    return home


def _context(argv: list[str]) -> str:
    args = build_parser().parse_args([*argv, "-f", str(REFERENCE)])
    return load_context(args).target


def test_the_spec_says_local_the_state_says_proxmox_every_command_acts_on_proxmox() -> None:
    assert load_spec(REFERENCE).lab.target == "local"
    _record("proxmox")
    for argv in AFTER_UP:
        assert _context(argv) == "proxmox", argv


def test_before_any_up_the_flag_or_the_spec_decides() -> None:
    assert _context(["plan"]) == "local"
    assert _context(["plan", "--target", "proxmox"]) == "proxmox"
    assert _context(["up", "--target", "proxmox"]) == "proxmox"
    assert _context(["harden"]) == "local"


def test_a_target_flag_that_disagrees_with_the_recorded_one_is_refused() -> None:
    home = _record("proxmox")
    assert _context(["status", "--target", "proxmox"]) == "proxmox"
    with pytest.raises(LabError) as err:
        _context(["up", "--target", "local"])
    (line,) = err.value.lines
    assert "is up on target proxmox" in line and str(home.state_file) in line
    assert "not local" in line and "`mlseclab down`" in line


def test_a_corrupt_state_falls_back_to_the_spec_for_the_decision() -> None:
    home = _record("proxmox")
    home.state_file.write_text("{not json", encoding="utf-8")
    assert _context(["plan"]) == "local"
    home.state_file.write_text(json.dumps({"target": "elsewhere"}), encoding="utf-8")
    assert _context(["plan"]) == "local"


def _posture_lab(tmp_path: Path, kind: str) -> PostureLab:
    from mlseclab.inventory import render_inventory

    spec = load_spec(REFERENCE)
    topo = derive(spec)
    target = "local" if kind == "container" else "proxmox"
    (tmp_path / "inventory.yml").write_text(
        render_inventory(topo, LabHome(spec.lab.name, tmp_path), kind, target), encoding="utf-8"
    )
    return PostureLab(spec_path=REFERENCE, spec=spec, topology=topo, state=tmp_path)


def test_the_posture_plugin_takes_each_nodes_kind_from_the_inventory(tmp_path: Path) -> None:
    # the spec says local, but up made VMs: the checks must treat them as VMs
    vms = _posture_lab(tmp_path, "vm")
    assert vms.spec.lab.target == "local"
    assert vms.runtime_kinds == dict.fromkeys(vms.spec.nodes, "vm")
    assert not any(n.runs_as_container for n in vms.nodes())
    (tmp_path / "c").mkdir()
    containers = _posture_lab(tmp_path / "c", "container")
    assert all(n.runs_as_container for n in containers.nodes())


def test_the_inventory_names_the_target_up_used_not_the_specs(tmp_path: Path) -> None:
    from mlseclab.inventory import parse_inventory, render_inventory

    topo = derive(load_spec(REFERENCE))
    doc = parse_inventory(render_inventory(topo, LabHome("reference", tmp_path), "vm", "proxmox"))
    assert doc["all"]["vars"]["mlseclab_target"] == "proxmox"


def test_without_an_inventory_each_node_is_what_the_spec_says(tmp_path: Path) -> None:
    spec = load_spec(REFERENCE)
    lab = PostureLab(spec_path=REFERENCE, spec=spec, topology=derive(spec), state=tmp_path)
    assert lab.runtime_kinds == {}
    assert {n.name: n.runs_as_container for n in lab.nodes()} == {
        name: node.kind.value == "container" for name, node in spec.nodes.items()
    }


def _tree_hash(root: Path, *, skip: tuple[Path, ...] = ()) -> str:
    """Names, modes, mtimes and contents of everything under ``root``."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p in skip:
            continue
        st = p.lstat()
        h.update(f"{p.relative_to(root)} {st.st_mode:o} {st.st_mtime_ns}\n".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_role_vars_is_a_pure_read_of_what_up_recorded() -> None:
    from mlseclab.harden import ROLE_VARS, role_vars

    home = _record("local")
    state = home.read_state()
    state[ROLE_VARS] = {"mlseclab_wheelhouse_dir": "/var/cache/mlseclab/wheelhouse-x"}
    home.write_state(state)
    before = _tree_hash(home.root.parent)
    assert role_vars(home) == {"mlseclab_wheelhouse_dir": "/var/cache/mlseclab/wheelhouse-x"}
    assert _tree_hash(home.root.parent) == before


def test_harden_says_to_run_up_when_the_state_lacks_the_role_vars() -> None:
    from mlseclab.harden import role_vars

    home = LabHome.for_lab("reference")
    with pytest.raises(LabError, match=r"is not up .* run `mlseclab up` first"):
        role_vars(home)
    home = _record("local")  # a lab up'ed by an older mlseclab
    before = _tree_hash(home.root.parent)
    with pytest.raises(LabError, match=r"records no role variables.*run `mlseclab up` first"):
        role_vars(home)
    assert _tree_hash(home.root.parent) == before


def test_harden_check_passes_the_recorded_vars_and_writes_nothing_else(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The configuration layer of drift: nothing but the lock is touched before the run."""
    from mlseclab.harden import ROLE_VARS, HardenResult

    home = _record("local")
    state = home.read_state()
    state[ROLE_VARS] = {"mlseclab_wheelhouse_dir": "/somewhere"}
    home.write_state(state)
    with home.lock("up"):
        pass
    seen: dict[str, object] = {}

    def fake_run(home_: LabHome, **kw: object) -> HardenResult:
        seen.update(kw)
        return HardenResult("id", tmp_path, "successful", {}, [], 0.0)

    monkeypatch.setattr("mlseclab.lifecycle.run_playbook", fake_run)
    from mlseclab.commands.harden import harden_lab

    args = build_parser().parse_args(["harden", "--check", "-f", str(REFERENCE)])
    ctx = load_context(args)
    lock = home.root / "lock"  # the lock names its holder: the one file harden may write
    before = _tree_hash(home.root.parent, skip=(lock,))
    harden_lab(ctx, check=True)
    assert _tree_hash(home.root.parent, skip=(lock,)) == before
    assert seen["extravars"] == {"mlseclab_wheelhouse_dir": "/somewhere"}
    assert seen["check"] is True


def test_open_target_takes_plain_values_and_both_targets_answer_the_protocol(
    tmp_path: Path,
) -> None:
    from mlseclab.errors import TargetError
    from mlseclab.targets import open_target

    spec = load_spec(REFERENCE)
    home = LabHome(spec.lab.name, tmp_path)
    local = open_target(spec, REFERENCE, derive(spec), home, "local")
    remote = open_target(spec, REFERENCE, derive(spec), home, "proxmox")
    assert (local.kind, local.runtime_kind, local.rebuilds) == ("local", "container", True)
    assert (remote.kind, remote.runtime_kind, remote.rebuilds) == ("proxmox", "vm", False)
    assert local.snapshots is not None and remote.snapshots is None
    assert remote.quarantine_models() == []
    with pytest.raises(TargetError, match="`mlseclab rebuild` works on the local target only"):
        remote.destroy_nodes(["rag-01"])
    with pytest.raises(LabError, match="--purge-snapshots is for the local target"):
        remote.down(purge_data=False, purge_snapshots=True, force=False)


class _FakeTarget:
    kind = "local"
    runtime_kind = "container"
    rebuilds = True
    snapshots = None

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.changes: list[str] = []

    def up(self) -> None:
        self.calls.append("up")

    def destroy_nodes(self, nodes: list[str]) -> None:
        self.calls.append(f"destroy {','.join(nodes)}")


def _sequence(monkeypatch: pytest.MonkeyPatch, fail_on: set[str]) -> list[str]:
    from mlseclab.harden import HardenResult, HostSummary

    calls: list[str] = []

    def harden_lab(ctx: object, *, limit: str | None = None) -> HardenResult:
        calls.append(f"harden {limit}")
        hosts = {h: HostSummary(failed=int(h in fail_on)) for h in (limit or "a,b").split(",")}
        return HardenResult("x", Path("/nonexistent"), "successful", hosts, [], 0.0)

    def verify_lab(ctx: object, nodes: list[str] | None = None) -> tuple[object, Path]:
        calls.append(f"verify {nodes}")
        return object(), Path("/nonexistent")

    def wait_for_log_shipping(ctx: object, nodes: list[str] | None) -> list[str]:
        calls.append(f"shipped {nodes}")
        return []

    monkeypatch.setattr("mlseclab.lifecycle.harden_lab", harden_lab)
    monkeypatch.setattr("mlseclab.lifecycle.verify_lab", verify_lab)
    monkeypatch.setattr("mlseclab.lifecycle.wait_for_log_shipping", wait_for_log_shipping)
    return calls


def test_converge_and_rebuild_run_their_steps_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import Any

    from mlseclab import lifecycle

    ctx: Any = None
    calls = _sequence(monkeypatch, fail_on=set())
    target: Any = _FakeTarget(calls)
    lifecycle.converge(ctx, target, after_up=lambda: calls.append("after up"))
    # verify waits for the hardened nodes' first log shipment
    assert calls == ["up", "after up", "harden None", "shipped None", "verify None"]
    calls.clear()
    lifecycle.rebuild(ctx, target, ["a"], verify_nodes=["a"])
    assert calls == ["destroy a", "up", "harden a", "shipped ['a']", "verify ['a']"]
    calls.clear()
    lifecycle.converge(ctx, target, harden=False, verify=False)
    assert calls == ["up"]


def test_a_failed_harden_ends_converge_unless_it_keeps_going(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typing import Any

    from mlseclab import lifecycle

    ctx: Any = None
    calls = _sequence(monkeypatch, fail_on={"b"})
    target: Any = _FakeTarget(calls)
    done = lifecycle.converge(ctx, target, limit=["a", "b"])
    assert calls == ["up", "harden a,b"] and done.run is None and done.broken == {"b"}
    calls.clear()
    done = lifecycle.converge(ctx, target, limit=["a", "b"], keep_going=True)
    assert calls == ["up", "harden a,b", "verify None"] and done.run is not None
