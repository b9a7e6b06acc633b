"""What every command needs: the spec, the derived topology, the target."""

from __future__ import annotations

import argparse
import difflib
from dataclasses import dataclass
from pathlib import Path

from mlseclab.errors import LabError
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


def hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def chosen_nodes(ctx: Context, names: list[str]) -> list[str]:
    """The named nodes in the spec's order (all when none are named); unknown ones refused."""
    known = list(ctx.spec.nodes)
    unknown = [n for n in names if n not in ctx.spec.nodes]
    if unknown:
        raise LabError(
            f"{ctx.spec_path}: lab {ctx.spec.lab.name} has no node {unknown[0]!r}"
            f"{hint(unknown[0], known)}; its nodes: {', '.join(known)}"
        )
    return [n for n in known if n in names] if names else known
