"""``mlseclab harden``: converge every node to the hardened posture."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.table import Table

from mlseclab import ui
from mlseclab.commands.common import load_context
from mlseclab.errors import ERROR, OK
from mlseclab.harden import HardenResult, TaskResult, run_playbook
from mlseclab.secrets import ensure_secrets


def _show(check: bool) -> Callable[[TaskResult], None]:
    def on_result(r: TaskResult) -> None:
        if r.status == "changed":
            verb = "would change" if check else "changed"
            ui.info(f"  [yellow]~[/] {r.host}: {r.task} [dim]({verb})[/]")
        elif r.status in ("failed", "unreachable"):
            first = r.message.splitlines()[0] if r.message else r.status
            ui.info(f"  [red]✗[/] {r.host}: {r.task}: {first}")

    return on_result


def summary_table(result: HardenResult, check: bool) -> Table:
    title = f"{'check' if check else 'harden'}: run {result.ident} ({result.seconds:.0f}s)"
    table = Table(title=title, title_justify="left")
    for col in (
        "node",
        "ok",
        "changed" if not check else "would change",
        "failed",
        "unreachable",
        "skipped",
    ):
        table.add_column(col, justify="right" if col != "node" else "left")
    for host, s in sorted(result.hosts.items()):
        table.add_row(
            host,
            str(s.ok),
            f"[yellow]{s.changed}[/]" if s.changed else "0",
            f"[red]{s.failed}[/]" if s.failed else "0",
            f"[red]{s.unreachable}[/]" if s.unreachable else "0",
            str(s.skipped),
        )
    return table


def cmd_harden(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    with ctx.home.lock("harden"):
        created = ensure_secrets(ctx.topology, ctx.home)
        for item in created:
            ui.info(f"  [green]+[/] secret: {item}")
        ui.info(f"harden: lab [bold]{ctx.spec.lab.name}[/]{' (check mode)' if args.check else ''}")
        result = run_playbook(
            ctx.home,
            check=args.check,
            limit=args.limit,
            tags=args.tags,
            skip_tags=args.skip_tags,
            on_result=_show(args.check),
        )
    ui.out.print(summary_table(result, args.check))
    ui.info(f"events: {result.artifacts}")
    if result.failed:
        bad = sum(1 for h in result.hosts.values() if h.failed or h.unreachable)
        ui.error(
            f"harden failed on {bad} node(s) (ansible status {result.status}); "
            "the lines above and the run's events name the task"
        )
        return ERROR
    return OK
