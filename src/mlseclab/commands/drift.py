"""``mlseclab drift``: what differs from the spec, layer by layer; ``--fix`` puts it back."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

from mlseclab import ui
from mlseclab.commands.common import Context, chosen_nodes, load_context
from mlseclab.drift import (
    CONFIGURATION,
    INFRASTRUCTURE,
    LAYERS,
    POSTURE,
    DriftFinding,
    DriftReport,
    configuration_findings,
    posture_findings,
)
from mlseclab.errors import ERROR, FINDINGS, OK, LabError, TargetError
from mlseclab.lifecycle import converge, harden_lab, rebuild, target_of, verify_lab
from mlseclab.posture.report import FRAMEWORK_NAMES, new_report_dir, score
from mlseclab.templating import render_html


def detect(ctx: Context, nodes: list[str] | None, layers: list[str]) -> DriftReport:
    report = DriftReport(lab=ctx.spec.lab.name, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if INFRASTRUCTURE in layers:
        t0 = time.monotonic()
        ui.info("drift: infrastructure")
        try:
            report.findings += target_of(ctx).infrastructure_drift(nodes)
        except TargetError as exc:
            report.errors.append(f"infrastructure: {' '.join(exc.lines)}")
        report.seconds[INFRASTRUCTURE] = time.monotonic() - t0
        report.layers_run.append(INFRASTRUCTURE)
    if CONFIGURATION in layers:
        t0 = time.monotonic()
        ui.info("drift: configuration (site.yml in check mode with diffs)")
        result = harden_lab(ctx, check=True, limit=",".join(nodes) if nodes else None)
        report.findings += configuration_findings(result)
        if result.failed and not any(h.failed or h.unreachable for h in result.hosts.values()):
            report.errors.append(f"configuration: {result.playbook_error()}")
        report.seconds[CONFIGURATION] = time.monotonic() - t0
        report.layers_run.append(CONFIGURATION)
    if POSTURE in layers:
        t0 = time.monotonic()
        ui.info("drift: posture (the verify suite)")
        run, directory = verify_lab(ctx, nodes)
        report.findings += posture_findings(run.results)
        report.findings += [
            DriftFinding(
                layer=POSTURE,
                node=s.scope,
                what="verify",
                expected="the checks run",
                found=f"did not run (exit {s.returncode})",
                detail=s.output[-2000:],
            )
            for s in run.broken_scopes
        ]
        report.posture = {"report": str(directory), **run.as_dict()}
        report.seconds[POSTURE] = time.monotonic() - t0
        report.layers_run.append(POSTURE)
    return report


def print_report(report: DriftReport) -> None:
    title = f"drift: lab {report.lab}: {len(report.findings)} finding(s)"
    table = Table(title=ui.esc(title), title_justify="left", show_lines=False)
    for col in ("layer", "node", "what", "controls", "expected", "found"):
        table.add_column(col, overflow="fold")
    for f in report.findings:
        what = f.what.partition(" | ")[0]  # a task's control ids go to their own column
        table.add_row(
            *(ui.esc(v) for v in (f.layer, f.node, what[:70], ", ".join(f.controls))),
            ui.esc(f.expected[:50]),
            f"[red]{ui.esc(f.found[:50])}[/]",
        )
    if report.findings:
        ui.out.print(table)
    for f in report.findings:
        if f.detail and f.layer != POSTURE:  # posture evidence is in the verify output above
            lines = f.detail.splitlines()
            ui.info(f"  [bold]{ui.esc(f.node)}[/]: {ui.esc(f.what.partition(' | ')[0][:80])}")
            for line in lines[:12]:
                ui.out.print(f"      {line}", markup=False, highlight=False)
            if len(lines) > 12:
                ui.plain(f"      ... {len(lines) - 12} more lines in report.json")
    for layer, found in report.by_layer().items():
        ran = layer in report.layers_run
        took = report.seconds.get(layer, 0.0)
        state = (
            "not read"
            if not ran
            else f"[red]{len(found)} drifted[/]"
            if found
            else "[green]no drift[/]"
        )
        ui.info(f"  {layer}: {state}" + (f" ({took:.0f}s)" if ran else ""))
    for e in report.errors:
        ui.error(e)


def write_reports(report: DriftReport, directory: Path) -> None:
    report.write_json(directory / "report.json")
    page = render_html(
        "drift.html.j2",
        report=report,
        layers=report.by_layer(),
        framework_names=FRAMEWORK_NAMES,
        score=score,
    )
    (directory / "report.html").write_text(page, encoding="utf-8")


def fix(ctx: Context, report: DriftReport, nodes: list[str] | None) -> bool:
    """Put the lab back: converge the infrastructure (up), re-harden the drifted nodes,
    verify; a node that hardening cannot bring back (an account, a process or a listener
    the roles do not own) is rebuilt from the image, datasets kept, and verified again."""
    target = target_of(ctx)
    # before up: up puts the pinned file back from the model cache (and refuses to
    # serve a file that differs from its pin)
    for line in target.quarantine_models():
        ui.warn(f"drift --fix: quarantined {line}; the pinned file is put back")
    drifted = sorted({f.node for f in report.findings if f.node in ctx.spec.nodes})

    def up_done() -> None:
        if drifted:
            ui.plain(f"drift --fix: hardening {', '.join(drifted)}")

    ui.info("drift --fix: converging the infrastructure (up)")
    done = converge(
        ctx,
        target,
        harden=bool(drifted),
        limit=drifted,
        verify_nodes=nodes,
        keep_going=True,
        after_up=up_done,
    )
    if done.run is None:
        return False  # the playbook itself failed: nothing to rebuild
    broken = done.broken
    broken |= {r.node for r in done.run.results if r.failing} & set(ctx.spec.nodes)
    if done.run.passed and not broken:
        return True
    if not target.rebuilds or not broken:
        return False
    victims = sorted(broken)
    ui.warn(
        f"drift --fix: {', '.join(victims)} still differ after hardening: "
        "rebuilding from the image (datasets kept)"
    )
    done = rebuild(ctx, target, victims, verify_nodes=nodes)
    return done.run is not None and done.run.passed


def cmd_drift(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    nodes = list(args.nodes) or None
    if nodes:
        nodes = chosen_nodes(ctx, nodes)
    layers = [layer.strip() for layer in args.layers.split(",")] if args.layers else list(LAYERS)
    bad = [layer for layer in layers if layer not in LAYERS]
    if bad:
        raise LabError(f"--layers: unknown layer {', '.join(bad)}; valid: {', '.join(LAYERS)}")
    if not ctx.home.ssh_config.exists():
        raise LabError(f"lab {ctx.spec.lab.name} is not up: run `mlseclab up` first")
    report = detect(ctx, nodes, layers)
    directory = new_report_dir(ctx.spec.lab.name, args.reports, kind="drift")
    write_reports(report, directory)
    print_report(report)
    ui.plain(f"drift: reports in {directory}/ (report.json, report.html)")
    if report.errors and not report.findings:
        return ERROR
    if not report.drifted:
        return OK
    if not args.fix:
        return FINDINGS
    if fix(ctx, report, nodes):
        ui.info("drift --fix: [green]the lab is back to its spec; verify passes[/]")
        return OK
    ui.error("drift --fix: verify still has findings after re-converging")
    return FINDINGS
