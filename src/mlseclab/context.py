"""The lab a command acts on: its spec, the derived topology, its home and target.

Plain values, built at the CLI edge (:func:`mlseclab.commands.common.load_context`) and
handed to :mod:`mlseclab.lifecycle` and the targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlseclab.errors import LabError
from mlseclab.spec import LabSpec
from mlseclab.spec.messages import suggest
from mlseclab.state import LabHome
from mlseclab.topology import Topology


@dataclass(frozen=True)
class Context:
    spec_path: Path
    spec: LabSpec
    topology: Topology
    home: LabHome
    target: str  # where the lab runs: local or proxmox, as up recorded it


def chosen_nodes(ctx: Context, names: list[str]) -> list[str]:
    """The named nodes in the spec's order (all when none are named); unknown ones refused."""
    known = list(ctx.spec.nodes)
    unknown = [n for n in names if n not in ctx.spec.nodes]
    if unknown:
        raise LabError(
            f"{ctx.spec_path}: lab {ctx.spec.lab.name} has no node {unknown[0]!r}; "
            f"its nodes: {', '.join(known)}{suggest(unknown[0], known)}"
        )
    return [n for n in known if n in names] if names else known
