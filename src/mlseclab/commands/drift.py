"""``mlseclab drift``: what differs from the spec, layer by layer; ``--fix`` puts it back."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

from mlseclab import ui
from mlseclab.commands.common import Context, load_context
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
from mlseclab.posture.report import FRAMEWORK_NAMES, new_report_dir, score
from mlseclab.templating import render_html


def infrastructure(ctx: Context, nodes: list[str] | None) -> list[DriftFinding]:
    from mlseclab.targets import open_target

    target = open_target(ctx)
    if ctx.target == "local":
        from mlseclab.targets.local.drift import infrastructure_drift
        from mlseclab.targets.local.target import LocalTarget

        assert isinstance(target, LocalTarget)
        return infrastructure_drift(target, nodes)
    from mlseclab.targets.proxmox_target import ProxmoxAdapter

    assert isinstance(target, ProxmoxAdapter)
    items = target._driver().drift()
    return [
        DriftFinding(
            layer=INFRASTRUCTURE,
            node=i.resource,
            what=i.type,
            expected="as the stack declares it",
            found="changed on the cluster",
            detail=i.diff,
        )
        for i in items
    ]


def detect(ctx: Context, nodes: list[str] | None, layers: list[str]) -> DriftReport:
    from mlseclab.commands.harden import harden_lab
    from mlseclab.commands.verify import verify_lab

    report = DriftReport(lab=ctx.spec.lab.name, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if INFRASTRUCTURE in layers:
        t0 = time.monotonic()
        ui.info("drift: infrastructure")
        try:
            report.findings += infrastructure(ctx, nodes)
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
    table = Table(title=title, title_justify="left", show_lines=False)
    for col in ("layer", "node", "what", "expected", "found"):
        table.add_column(col, overflow="fold")
    for f in report.findings:
        table.add_row(f.layer, f.node, f.what[:90], f.expected[:60], f"[red]{f.found[:60]}[/]")
    if report.findings:
        ui.out.print(table)
    for f in report.findings:
        if f.detail and f.layer != POSTURE:  # posture evidence is in the verify output above
            lines = f.detail.splitlines()
            ui.info(f"  [bold]{f.node}[/]: {f.what[:80]}")
            for line in lines[:12]:
                ui.out.print(f"      {line}", markup=False, highlight=False)
            if len(lines) > 12:
                ui.info(f"      ... {len(lines) - 12} more lines in report.json")
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
    """Re-converge what drifted (up, then harden the drifted nodes), then verify again."""
    from mlseclab.commands.harden import harden_lab
    from mlseclab.commands.verify import verify_lab
    from mlseclab.targets import open_target

    ui.info("drift --fix: converging the infrastructure (up)")
    open_target(ctx).up()
    drifted = sorted(
        {f.node for f in report.findings if f.node in ctx.spec.nodes}
        | (
            {n for n in ctx.spec.nodes}
            if any(f.node == "router" for f in report.findings)
            else set()
        )
    )
    limit = ",".join(drifted) if drifted else (",".join(nodes) if nodes else None)
    ui.info(f"drift --fix: hardening {limit or 'every node'}")
    if harden_lab(ctx, limit=limit).failed:
        return False
    run, _ = verify_lab(ctx, nodes)
    return run.passed


def cmd_drift(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    nodes = list(args.nodes) or None
    unknown = [n for n in nodes or [] if n not in ctx.spec.nodes]
    if unknown:
        raise LabError(
            f"{ctx.spec_path}: no node {', '.join(unknown)} in lab {ctx.spec.lab.name}; "
            f"nodes: {', '.join(ctx.spec.nodes)}"
        )
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
    ui.info(f"drift: reports in {directory}/ (report.json, report.html)")
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
