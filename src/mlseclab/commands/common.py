"""What every command needs: the spec, the derived topology, the target."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mlseclab.context import Context, chosen_nodes
from mlseclab.errors import LabError
from mlseclab.spec import LabSpec, load_spec
from mlseclab.state import LabHome
from mlseclab.topology import derive

DEFAULT_SPEC = Path("inventories/reference/lab.yaml")

__all__ = [
    "DEFAULT_SPEC",
    "Context",
    "chosen_nodes",
    "effective_target",
    "load_context",
    "resolve_spec",
]


TARGETS = ("local", "proxmox")


def recorded_target(home: LabHome) -> str | None:
    """The target ``up`` recorded in the lab's state.json; None before any ``up`` (or when
    the state cannot be read: the command that needs it says so itself)."""
    try:
        kind = home.read_state().get("target")
    except (LabError, OSError):
        return None
    return kind if kind in TARGETS else None


def effective_target(home: LabHome, spec: LabSpec, asked: str | None) -> str:
    """Where the lab runs: what ``up`` recorded; before any ``up``, ``--target`` or the spec.

    A ``--target`` that disagrees with the recorded one is refused: the lab is where it is.
    """
    recorded = recorded_target(home)
    if recorded is None:
        return asked or spec.lab.target
    if asked is not None and asked != recorded:
        raise LabError(
            f"lab {spec.lab.name} is up on target {recorded} ({home.state_file} records it), "
            f"not {asked}: leave out --target, or run `mlseclab down` first to move it to {asked}"
        )
    return recorded


def resolve_spec(args: argparse.Namespace) -> Path:
    """The spec a command reads: -f FILE, -l NAME, $MLSECLAB_SPEC, or the reference lab."""
    if getattr(args, "spec", None):
        return Path(args.spec)
    if getattr(args, "lab", None):
        return Path("inventories") / str(args.lab) / "lab.yaml"
    if env := os.environ.get("MLSECLAB_SPEC"):
        return Path(env)
    return DEFAULT_SPEC


def load_context(args: argparse.Namespace) -> Context:
    path = resolve_spec(args)
    spec = load_spec(path)
    home = LabHome.for_lab(spec.lab.name)
    target = effective_target(home, spec, getattr(args, "target", None))
    if target != spec.lab.target:
        # --target (or the recorded target) has rules of its own, e.g. no containers on
        # Proxmox: checked here, located in the file, before any command touches a machine.
        spec = load_spec(path, target)
    return Context(
        spec_path=path,
        spec=spec,
        topology=derive(spec),
        home=home,
        target=target,
    )
