"""Commands that keep a lab's data through destruction: rebuild, snapshots, restore."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import TYPE_CHECKING

from rich.table import Table

from mlseclab import ui
from mlseclab.commands.common import Context, chosen_nodes, hint, load_context
from mlseclab.errors import ERROR, FINDINGS, OK, LabError, TargetError
from mlseclab.snapshots import human

if TYPE_CHECKING:
    from mlseclab.targets.local.target import LocalTarget


def local_target(ctx: Context, command: str) -> LocalTarget:
    """The lab's local target; ``command`` is not available on the Proxmox target yet."""
    if ctx.target != "local":
        raise TargetError(
            f"`mlseclab {command}` works on the local target only for now; on Proxmox the "
            "datasets are ZFS datasets of the pve_host role, which is not written yet"
        )
    from mlseclab.targets.local.target import LocalTarget

    return LocalTarget(ctx.spec, ctx.topology, ctx.home)


def cmd_rebuild(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    victims = chosen_nodes(ctx, args.nodes)
    target = local_target(ctx, "rebuild")
    start = time.monotonic()
    ui.info(f"rebuild: {ui.esc(', '.join(victims))} of lab [bold]{ui.esc(ctx.spec.lab.name)}[/]")
    target.destroy_nodes(victims)
    target.up()  # converges: re-creates the removed nodes from the image, starts stopped ones
    rebuilt = time.monotonic() - start
    ui.plain(f"rebuild: {len(victims)} node(s) re-created in {rebuilt:.1f}s; datasets kept")
    if not args.no_harden:
        from mlseclab.commands.harden import harden_lab

        if harden_lab(ctx, limit=",".join(victims)).failed:
            return ERROR
        ui.plain(
            f"rebuild: {len(victims)} node(s) re-created and hardened in "
            f"{time.monotonic() - start:.0f}s"
        )
        # The last step of a rebuild is proving the posture of the rebuilt nodes.
        from mlseclab.commands.verify import verify_lab

        run, _ = verify_lab(ctx, victims)
        return OK if run.passed else FINDINGS
    ui.plain(f"  next: mlseclab harden --limit {','.join(victims)}, then mlseclab verify")
    return OK


def _age(created: str, now: dt.datetime) -> str:
    seconds = (now - dt.datetime.fromisoformat(created)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return f"{max(seconds, 0):.0f} s ago"


def cmd_snapshots(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    store = local_target(ctx, "snapshots").snapshots
    try:
        snaps = store.find()
    except PermissionError:
        raise LabError(
            f"reading {store.root} needs root (snapshots are 0700); run it with sudo"
        ) from None
    if args.json:
        ui.out.print_json(
            json.dumps(
                {
                    "lab": ctx.spec.lab.name,
                    "root": str(store.root),
                    "snapshots": [s.as_json() for s in snaps],
                }
            )
        )
        return OK
    if not snaps:
        ui.out.print(
            f"lab {ctx.spec.lab.name} has no dataset snapshots (in {store.root})", markup=False
        )
        return OK
    table = Table(
        title=ui.esc(f"snapshots of lab {ctx.spec.lab.name} ({store.root})"), title_justify="left"
    )
    for col in ("dataset", "id (UTC time-reason)", "created", "reason", "size"):
        table.add_column(col, justify="right" if col == "size" else "left", no_wrap=True)
    now = dt.datetime.now(dt.UTC)
    for s in snaps:
        cells = (s.dataset, s.id, _age(s.created, now), s.reason, human(s.bytes))
        table.add_row(*(ui.esc(v) for v in cells))
    ui.out.print(table)
    return OK


def cmd_restore(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    if args.dataset not in ctx.spec.datasets:
        known = list(ctx.spec.datasets)
        raise LabError(
            f"{ctx.spec_path}: lab {ctx.spec.lab.name} has no dataset {args.dataset!r}"
            f"{hint(args.dataset, known)}; its datasets: {', '.join(known)}"
        )
    target = local_target(ctx, "restore")
    snap = target.snapshots.get(args.dataset, args.snapshot)
    users = target.users_of(args.dataset)
    if not args.yes:
        question = (
            f"restore dataset {args.dataset} of lab {ctx.spec.lab.name} from snapshot {snap.id} "
            f"({snap.files} files, {human(snap.bytes)})? What is there now is kept as a "
            "pre-restore snapshot"
            + (f"; {', '.join(users)} stop(s) meanwhile" if users else "")
            + ". Continue?"
        )
        if not ui.confirm(question):
            raise LabError(
                "restore was not confirmed; nothing was changed "
                "(pass --yes to confirm without a question)"
            )
    start = time.monotonic()
    restored, pre = target.restore_dataset(args.dataset, snap.id)
    ui.plain(
        f"restore: dataset {args.dataset} is snapshot {restored.id} again "
        f"({time.monotonic() - start:.1f}s)"
        + (
            f"; the contents before are snapshot {pre.id} "
            f"(`mlseclab restore {args.dataset} {pre.id}` undoes this)"
            if pre is not None
            else ""
        )
    )
    return OK
