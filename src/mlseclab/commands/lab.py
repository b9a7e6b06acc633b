"""Commands that act on a lab: up, status, down, ssh."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict

from rich.table import Table

from mlseclab import ui
from mlseclab.commands.common import load_context
from mlseclab.errors import ERROR, FINDINGS, OK, LabError
from mlseclab.lifecycle import converge, target_of


def cmd_up(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    target = target_of(ctx)
    start = time.monotonic()
    ui.info(
        f"up: lab [bold]{ui.esc(ctx.spec.lab.name)}[/] on target {ctx.target} "
        f"from {ui.esc(ctx.spec_path)}"
    )

    def summary() -> None:
        took = time.monotonic() - start
        if target.changes:
            n = len(target.changes)
            ui.plain(f"up: {n} change(s) in {took:.1f}s; lab {ctx.spec.lab.name} is up")
        else:
            ui.plain(f"up: nothing to change ({took:.1f}s); lab {ctx.spec.lab.name} is up")

    def access() -> None:
        ui.plain(f"  ssh -F {ctx.home.ssh_config} {next(iter(ctx.spec.nodes))}")
        ui.plain(f"  inventory: {ctx.home.inventory}")

    done = converge(
        ctx,
        target,
        harden=not args.no_harden,
        verify=not args.no_harden and not args.no_verify,
        after_up=summary,
        after_harden=access,
    )
    if done.hardened is None:
        access()
        return OK
    if done.hardened.failed:
        return ERROR
    if done.run is None:
        return OK
    return OK if done.run.passed else FINDINGS


def cmd_status(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    rows = target_of(ctx).status()
    if args.json:
        ui.out.print_json(
            json.dumps(
                {"lab": ctx.spec.lab.name, "target": ctx.target, "nodes": [asdict(r) for r in rows]}
            )
        )
        return OK
    table = Table(title=ui.esc(f"lab {ctx.spec.lab.name} ({ctx.target})"), title_justify="left")
    for col in ("node", "role", "kind", "segments", "mgmt", "state"):
        table.add_column(col)
    colour = {"running": "green", "degraded": "yellow", "absent": "dim", "stopped": "red"}
    for r in rows:
        table.add_row(
            *(ui.esc(v) for v in (r.name, r.role, r.kind, r.segments, r.mgmt_ip)),
            f"[{colour.get(r.state, 'default')}]{ui.esc(r.state)}[/]",
        )
    ui.out.print(table)
    return OK


def cmd_down(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    protected = [n for n, d in ctx.spec.datasets.items() if d.protect]
    purge_snapshots = getattr(args, "purge_snapshots", False)
    doomed = []
    if args.purge_data and protected:
        doomed.append(f"the protected datasets {', '.join(protected)}")
    if purge_snapshots:
        doomed.append("every dataset snapshot")
    if doomed and not args.yes:
        question = f"down deletes {' and '.join(doomed)} of lab {ctx.spec.lab.name}. Continue?"
        if not ui.confirm(question):
            flags = " and ".join(
                f
                for f, on in (
                    ("--purge-data", args.purge_data),
                    ("--purge-snapshots", purge_snapshots),
                )
                if on
            )
            raise LabError(
                f"{flags} was not confirmed; nothing was removed "
                "(pass --yes to confirm without a question)"
            )
    target = target_of(ctx)
    target.down(purge_data=args.purge_data, purge_snapshots=purge_snapshots, force=args.force)
    snapshots = target.snapshots.root if target.snapshots is not None else None
    ui.plain(
        f"down: lab {ctx.spec.lab.name} removed"
        + (
            ""
            if args.purge_data or not protected
            else f"; protected datasets kept: {', '.join(protected)}"
        )
    )
    if snapshots is not None and snapshots.is_dir():
        ui.plain(
            f"  dataset snapshots kept in {snapshots} (`mlseclab snapshots` lists them, "
            "`mlseclab restore` brings one back, `down --purge-snapshots` deletes them)"
        )
    return OK


def cmd_ssh(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    if args.node not in ctx.spec.nodes:
        raise LabError(f"unknown node {args.node!r}; nodes: {', '.join(ctx.spec.nodes)}")
    if not ctx.home.ssh_config.exists():
        raise LabError(
            f"lab {ctx.spec.lab.name} is not up (no {ctx.home.ssh_config}); run `mlseclab up` first"
        )
    ssh = shutil.which("ssh")
    if ssh is None:
        raise LabError("ssh is missing; install it with `apt-get install openssh-client`")
    ctx.home.ensure_control_dir()
    os.execv(ssh, [ssh, "-F", str(ctx.home.ssh_config), args.node, *args.remote])  # noqa: S606
