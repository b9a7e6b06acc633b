"""``mlseclab harden``: converge every node to the hardened posture."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable

from rich.table import Table

from mlseclab import ui
from mlseclab.commands.common import Context, load_context
from mlseclab.errors import ERROR, OK
from mlseclab.harden import HardenResult, TaskResult, role_vars, run_playbook


def _show(check: bool) -> Callable[[TaskResult], None]:
    def on_result(r: TaskResult) -> None:
        if r.status == "changed":
            verb = "would change" if check else "changed"
            ui.info(f"  [yellow]~[/] {ui.esc(r.host)}: {ui.esc(r.task)} [dim]({verb})[/]")
        elif r.status in ("failed", "unreachable"):
            first = r.message.splitlines()[0] if r.message else r.status
            ui.info(f"  [red]✗[/] {ui.esc(r.host)}: {ui.esc(r.task)}: {ui.esc(first)}")

    return on_result


def summary_table(result: HardenResult, check: bool) -> Table:
    title = f"{'check' if check else 'harden'}: run {result.ident} ({result.seconds:.0f}s)"
    table = Table(title=ui.esc(title), title_justify="left")
    for col in (
        "node",
        "ok",
        "would change" if check else "changed",
        "failed",
        "unreachable",
        "skipped",
    ):
        table.add_column(col, justify="left" if col == "node" else "right")
    for host, s in sorted(result.hosts.items()):
        table.add_row(
            ui.esc(host),
            str(s.ok),
            f"[yellow]{s.changed}[/]" if s.changed else "0",
            f"[red]{s.failed}[/]" if s.failed else "0",
            f"[red]{s.unreachable}[/]" if s.unreachable else "0",
            str(s.skipped),
        )
    return table


def harden_lab(
    ctx: Context,
    *,
    quiet: bool = False,
    check: bool = False,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
) -> HardenResult:
    with ctx.home.lock("harden"):
        extravars = role_vars(ctx.home)  # what up provisioned; harden writes none of it
        lab = ui.esc(ctx.spec.lab.name)
        ui.info(f"harden: lab [bold]{lab}[/]{' (check mode)' if check else ''}")
        result = run_playbook(
            ctx.home,
            check=check,
            limit=limit,
            tags=tags,
            skip_tags=skip_tags,
            extravars=extravars,
            on_result=_show(check),
        )
    if not quiet:  # --json prints the summary instead
        ui.out.print(summary_table(result, check))
    ui.plain(f"events: {result.artifacts}")
    if result.failed:
        bad = sum(1 for h in result.hosts.values() if h.failed or h.unreachable)
        if bad:
            ui.error(
                f"harden failed on {bad} node(s); the lines above and the run's events "
                "name the task"
            )
        else:
            ui.error(f"the playbook failed before any node did: {result.playbook_error()}")
    return result


def cmd_harden(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    result = harden_lab(
        ctx,
        check=args.check,
        limit=args.limit,
        tags=args.tags,
        skip_tags=args.skip_tags,
        quiet=args.json,
    )
    if args.json:
        ui.out.print_json(
            json.dumps(
                {
                    "lab": ctx.spec.lab.name,
                    "check": args.check,
                    "run": result.ident,
                    "status": result.status,
                    "seconds": round(result.seconds, 1),
                    "changed": result.changed,
                    "failed": result.failed,
                    "hosts": {h: dataclasses.asdict(s) for h, s in sorted(result.hosts.items())},
                    "events": str(result.artifacts),
                }
            )
        )
    return ERROR if result.failed else OK
