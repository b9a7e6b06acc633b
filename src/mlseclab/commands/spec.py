"""Commands that only read the spec: validate, plan, graph."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from mlseclab import posture, ui
from mlseclab.commands.common import load_context, resolve_spec
from mlseclab.errors import OK, LabError
from mlseclab.graph import render
from mlseclab.lifecycle import target_of
from mlseclab.spec import load_spec
from mlseclab.topology import derive


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def cmd_validate(args: argparse.Namespace) -> int:
    path: Path = args.file or resolve_spec(args)
    spec = load_spec(path, getattr(args, "target", None))
    posture.check_waivers(spec, path)  # a waiver for a control no check carries waives nothing
    for problem in posture.expired_waivers(spec, path):
        ui.warn(str(problem))
    topo = derive(spec)
    allowed, total = topo.reachability_counts  # counted: the matrix is never built here
    counts = ", ".join(
        _n(len(items), word)
        for items, word in (
            (spec.networks, "network"),
            (spec.nodes, "node"),
            (spec.datasets, "dataset"),
            (spec.flows, "flow"),
        )
    )
    ui.out.print(
        f"{path}: valid — lab {spec.lab.name}: {counts} "
        f"({allowed} of {total} reachability pairs allowed)",
        markup=False,
    )
    return OK


def cmd_plan(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    plan = target_of(ctx).plan(offline=args.offline)
    if args.json:
        ui.out.print_json(
            json.dumps(
                {
                    "lab": ctx.spec.lab.name,
                    "target": ctx.target,
                    "offline": plan.offline,
                    "note": plan.note,
                    "resources": [asdict(r) for r in plan.resources],
                }
            )
        )
        return OK
    title = f"plan for lab {ctx.spec.lab.name} on target {ctx.target}"
    if plan.offline:
        title += " (offline: computed under mocks, no cluster contacted)"
    table = Table(title=ui.esc(title), title_justify="left")
    for col in ("action", "kind", "name", "details"):
        table.add_column(col)
    style = {"create": "green", "exists": "dim", "replace": "yellow", "delete": "red"}
    for r in plan.resources:
        table.add_row(
            f"[{style.get(r.action, 'default')}]{ui.esc(r.action)}[/]",
            *(ui.esc(v) for v in (r.kind, r.name, r.details)),
        )
    ui.out.print(table)
    counts: dict[str, int] = {}
    for r in plan.resources:
        counts[r.action] = counts.get(r.action, 0) + 1
    ui.out.print(
        ", ".join(
            f"{n} to {a}" if a != "exists" else f"{n} existing" for a, n in sorted(counts.items())
        )
    )
    if plan.note:
        ui.out.print(plan.note, markup=False)
    return OK


def cmd_graph(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in ("svg", "png", "pdf", "dot")]
    if bad:
        raise LabError(f"--format: unknown format {bad[0]!r}; valid: svg, png, pdf, dot")
    out_dir = args.output or ctx.home.root
    written = render(ctx.topology, out_dir, tuple(f for f in formats if f != "dot"))
    for path in written:
        ui.out.print(str(path), markup=False)
    return OK
