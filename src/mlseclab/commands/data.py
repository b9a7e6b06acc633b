"""Commands that keep a lab's data through destruction: rebuild, snapshots, restore."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

from rich.table import Table

from mlseclab import ui
from mlseclab.commands.common import chosen_nodes, load_context
from mlseclab.errors import ERROR, FINDINGS, OK, LabError
from mlseclab.lifecycle import rebuild, target_of
from mlseclab.spec.messages import suggest
from mlseclab.targets import local_only
from mlseclab.targets.local.snapshots import human


def cmd_rebuild(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    victims = chosen_nodes(ctx, args.nodes)
    target = target_of(ctx)
    start = time.monotonic()
    ui.info(f"rebuild: {ui.esc(', '.join(victims))} of lab [bold]{ui.esc(ctx.spec.lab.name)}[/]")

    def rebuilt() -> None:
        took = time.monotonic() - start
        ui.plain(f"rebuild: {len(victims)} node(s) re-created in {took:.1f}s; datasets kept")

    def hardened() -> None:
        ui.plain(
            f"rebuild: {len(victims)} node(s) re-created and hardened in "
            f"{time.monotonic() - start:.0f}s"
        )

    # The last step of a rebuild is proving the posture of the rebuilt nodes.
    done = rebuild(
        ctx,
        target,
        victims,
        verify_nodes=victims,
        harden=not args.no_harden,
        after_up=rebuilt,
        after_harden=hardened,
    )
    if done.hardened is None:
        ui.plain(f"  next: mlseclab harden --limit {','.join(victims)}, then mlseclab verify")
        return OK
    if done.hardened.failed:
        return ERROR
    assert done.run is not None
    return OK if done.run.passed else FINDINGS


def _age(created: str, now: dt.datetime) -> str:
    seconds = (now - dt.datetime.fromisoformat(created)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return f"{max(seconds, 0):.0f} s ago"


def cmd_snapshots(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    store = target_of(ctx).snapshots
    if store is None:
        raise local_only("snapshots")
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
            f"{ctx.spec_path}: lab {ctx.spec.lab.name} has no dataset {args.dataset!r}; "
            f"its datasets: {', '.join(known)}{suggest(args.dataset, known)}"
        )
    target = target_of(ctx)
    if target.snapshots is None:
        raise local_only("restore")
    snap = target.snapshots.get(args.dataset, args.snapshot)
    users = list(ctx.spec.mounts_of(args.dataset))
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
