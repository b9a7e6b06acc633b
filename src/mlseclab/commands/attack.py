"""`mlseclab attack`: run the adversary's scenarios and report blocked, detected or missed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from mlseclab import ui
from mlseclab.attack import choose, run
from mlseclab.commands.common import load_context
from mlseclab.errors import FINDINGS, OK
from mlseclab.posture.report import new_report_dir
from mlseclab.state import write_private
from mlseclab.templating import render_html

STYLE = {"blocked, detected": "green", "blocked": "yellow", "missed": "red"}


def write_reports(report: dict[str, Any], directory: Path) -> None:
    write_private(directory / "attack.json", json.dumps(report, indent=2) + "\n", 0o640)
    write_private(directory / "attack.html", render_html("attack.html.j2", report=report), 0o640)


def cmd_attack(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    scenarios = choose(list(args.scenarios), str(ctx.spec_path))
    with ctx.home.lock("attack"):
        report = run(
            ctx,
            scenarios,
            detect_timeout=args.detect_timeout,
            progress=None if args.json else (lambda m: ui.info(f"attack: {m}")),
        )
    directory = new_report_dir(ctx.spec.lab.name, args.reports, kind="attack")
    write_reports(report, directory)
    report["report_dir"] = str(directory)
    if args.json:
        ui.out.print_json(json.dumps(report))
    else:
        table = Table(title=f"attack on lab {report['lab']}", title_justify="left")
        for col in ("scenario", "verdict", "evidence", "detected by"):
            table.add_column(col)
        for s in report["scenarios"]:
            det = ", ".join(
                d["alert"]
                + (" (already firing)" if d["already_firing"] else f" +{d['delay_seconds']:.0f}s")
                for d in s["detections"]
            )
            evidence = "\n".join(s["evidence"] + ([s["error"]] if s["error"] else []))
            table.add_row(
                ui.esc(s["id"]),
                f"[{STYLE[s['verdict']]}]{s['verdict']}[/]",
                ui.esc(evidence),
                ui.esc(det or ("-" if not s["expected_alerts"] else "nothing fired")),
            )
        ui.out.print(table)
        for e in report["alert_errors"]:
            ui.warn(e)
        sm = report["summary"]
        ui.plain(
            f"attack: {sm['blocked']}/{sm['scenarios']} blocked, {sm['detected']} detected, "
            f"{sm['missed']} missed in {report['seconds']:.0f} s; reports in {directory}/"
        )
    return OK if report["summary"]["missed"] == 0 else FINDINGS
