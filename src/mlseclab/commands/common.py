"""What every command needs: the spec, the derived topology, the target."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mlseclab.spec import LabSpec, load_spec
from mlseclab.state import LabHome
from mlseclab.topology import Topology, derive


@dataclass(frozen=True)
class Context:
    spec_path: Path
    spec: LabSpec
    topology: Topology
    home: LabHome
    target: str


def load_context(args: argparse.Namespace) -> Context:
    from mlseclab.cli import resolve_spec

    path = resolve_spec(args)
    spec = load_spec(path)
    target = getattr(args, "target", None) or spec.lab.target
    return Context(
        spec_path=path,
        spec=spec,
        topology=derive(spec),
        home=LabHome.for_lab(spec.lab.name),
        target=target,
    )
