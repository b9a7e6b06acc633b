"""``mlseclab verify``: prove the lab's posture, node by node and control by control."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from mlseclab import posture, ui
from mlseclab.commands.common import Context, chosen_nodes, load_context
from mlseclab.errors import FINDINGS, OK, LabError
from mlseclab.posture.report import FRAMEWORK_NAMES, new_report_dir, score, write_reports
from mlseclab.posture.results import FAILING, Outcome
from mlseclab.posture.runner import PostureRun, ScopeRun, run_posture


def posture_control_ids() -> set[str]:
    """The lab control ids the posture suite's checks carry."""
    return posture.controls()


def check_waivers(ctx: Context) -> None:
    """A waiver must name a control some check carries (:func:`mlseclab.posture.check_waivers`)."""
    posture.check_waivers(ctx.spec, ctx.spec_path)
    for problem in posture.expired_waivers(ctx.spec, ctx.spec_path):
        ui.warn(str(problem))


def _framework_line(fw: str, ids: dict[str, Counter[Outcome]]) -> str:
    total: Counter[Outcome] = Counter()
    for c in ids.values():
        total.update(c)
    bad = [cid for cid, c in ids.items() if any(c[o] for o in FAILING)]
    if len(ids) <= 12:
        parts = [f"{cid} {score(c)}" for cid, c in ids.items()]
        body = " · ".join(parts)
    else:
        body = f"{len(ids)} controls, checks {score(total)}"
        if bad:
            body += f"; failing: {', '.join(bad)}"
    return f"{FRAMEWORK_NAMES.get(fw, fw)}: {body}"


def print_summary(run: PostureRun, roles: dict[str, str]) -> None:
    table = Table(title=ui.esc(f"verify: lab {run.lab} ({run.seconds:.0f}s)"), title_justify="left")
    for col in ("node", "role", "passed", "failed", "waived", "n/a"):
        table.add_column(col, justify="left" if col in ("node", "role") else "right")
    for node, c in run.by_node().items():
        bad = sum(c[o] for o in FAILING)
        table.add_row(
            ui.esc(node),
            ui.esc(roles.get(node, "lab")),
            score(c).split(" ")[0],
            f"[red]{bad}[/]" if bad else "0",
            str(c[Outcome.WAIVED]),
            str(c[Outcome.NOT_APPLICABLE]),
        )
    ui.out.print(table)
    for fw, ids in run.by_framework().items():
        ui.plain("  " + _framework_line(fw, ids))
    for r in (r for r in run.results if r.failing):
        lab_ids = ", ".join(r.lab_controls)
        first = (r.evidence.strip().splitlines() or [str(r.outcome)])[0][:200]
        line = f"{r.node}: {lab_ids} {r.title}: {first}"
        ui.info(f"  [red]✗[/] {ui.esc(line)}")
    for s in run.broken_scopes:
        tail = s.output.strip().splitlines()[-3:] or ["no output"]
        ui.info(
            f"  [red]✗[/] {ui.esc(s.scope)}: the checks did not run (exit {s.returncode}): "
            f"{ui.esc(tail[-1])}"
        )


def verify_lab(
    ctx: Context,
    nodes: Sequence[str] | None = None,
    *,
    reports: Path | None = None,
    extra: Sequence[str] = (),
) -> tuple[PostureRun, Path]:
    """Run the posture suite on ``nodes`` (all when none), print the summary, write reports."""
    if not ctx.home.ssh_config.exists():
        raise LabError(
            f"lab {ctx.spec.lab.name} is not up (no {ctx.home.ssh_config}): run `mlseclab up` first"
        )
    chosen = chosen_nodes(ctx, list(nodes or []))
    check_waivers(ctx)
    ctx.home.ensure_control_dir()  # a reboot empties the temp dir the sockets live in
    lab = ui.esc(ctx.spec.lab.name)
    ui.info(f"verify: {len(chosen)} node(s) of lab [bold]{lab}[/], in parallel")

    def done(s: ScopeRun) -> None:
        bad = sum(s.counts[o] for o in FAILING)
        mark = "[green]✓[/]" if not bad and s.results else "[red]✗[/]"
        ui.info(
            f"  {mark} {ui.esc(s.scope)}: {len(s.results)} checks, {bad} failed ({s.seconds:.1f}s)"
        )

    run = run_posture(
        lab=ctx.spec.lab.name,
        spec_path=ctx.spec_path.resolve(),
        state=ctx.home.root.resolve(),
        nodes=chosen,
        include_lab_scope=not nodes,
        extra=extra,
        on_scope_done=done,
    )
    directory = new_report_dir(ctx.spec.lab.name, reports)
    paths = write_reports(run, directory)
    print_summary(run, {n: node.role for n, node in ctx.spec.nodes.items()})
    verdict = "[green]all checks pass[/]" if run.passed else "[red]findings[/]"
    names = ", ".join(p.name for p in paths.values())
    ui.info(f"verify: {verdict}; reports in {ui.esc(directory)}/ ({ui.esc(names)})")
    return run, directory


def cmd_verify(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    extra = ["-k", args.select] if args.select else []
    run, _ = verify_lab(ctx, args.nodes, reports=args.reports, extra=extra)
    return OK if run.passed else FINDINGS
