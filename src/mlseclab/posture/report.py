"""Reports of a posture run: report.json, junit.xml and one self-contained report.html."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from mlseclab.posture.results import NOT_COUNTED, CheckResult, Outcome
from mlseclab.posture.runner import PostureRun
from mlseclab.templating import render_html

FRAMEWORK_NAMES = {
    "lab": "mlseclab",
    "cis": "CIS Debian 13",
    "devsec": "dev-sec",
    "owasp": "OWASP LLM Top 10 2025",
    "atlas": "MITRE ATLAS",
}


def reports_root() -> Path:
    import os

    return Path(os.environ.get("MLSECLAB_REPORTS_DIR", "reports"))


def new_report_dir(lab: str, root: Path | None = None, kind: str = "") -> Path:
    base = (root or reports_root()) / lab
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / (f"{stamp}-{kind}" if kind else stamp)
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{kind or 'verify'}-{n}"
    path.mkdir(parents=True, mode=0o750)
    return path


def score(c: Counter[Outcome]) -> str:
    """`passed/total` over the checks that count, with waived and N/A said aside."""
    counted = sum(v for k, v in c.items() if k not in NOT_COUNTED)
    text = f"{c[Outcome.PASSED]}/{counted}"
    aside = (Outcome.WAIVED, Outcome.NOT_APPLICABLE)  # NOT_COUNTED, in the order shown
    extra = [f"{c[k]} {k.replace('_', ' ')}" for k in aside if c[k]]
    return text + (f" ({', '.join(extra)})" if extra else "")


def write_json(run: PostureRun, path: Path) -> None:
    path.write_text(json.dumps(run.as_dict(), indent=1) + "\n", encoding="utf-8")


def write_junit(run: PostureRun, path: Path) -> None:
    suites = ET.Element("testsuites", name=f"mlseclab posture {run.lab}")
    by_node: dict[str, list[CheckResult]] = {}
    for r in run.results:
        by_node.setdefault(r.node, []).append(r)
    for node, results in sorted(by_node.items()):
        c = Counter(r.outcome for r in results)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=node,
            tests=str(len(results)),
            failures=str(c[Outcome.FAILED]),
            errors=str(c[Outcome.ERROR]),
            skipped=str(sum(c[o] for o in NOT_COUNTED) + c[Outcome.SKIPPED]),
        )
        for r in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{run.lab}.{node}",
                name=r.check,
                time=str(r.seconds),
            )
            props = ET.SubElement(case, "properties")
            for fw, ids in r.controls.items():
                for cid in ids:
                    ET.SubElement(props, "property", name=fw, value=cid)
            if r.outcome is Outcome.FAILED:
                ET.SubElement(case, "failure", message=r.title).text = r.evidence
            elif r.outcome is Outcome.ERROR:
                ET.SubElement(case, "error", message=r.title).text = r.evidence
            elif r.outcome in NOT_COUNTED or r.outcome is Outcome.SKIPPED:
                reason = r.waiver if r.outcome is Outcome.WAIVED else r.evidence
                ET.SubElement(case, "skipped", message=f"{r.outcome}: {reason}")
    for s in run.broken_scopes:
        suite = ET.SubElement(suites, "testsuite", name=s.scope, tests="1", errors="1")
        case = ET.SubElement(suite, "testcase", classname=f"{run.lab}.{s.scope}", name="run")
        ET.SubElement(case, "error", message="the checks did not run").text = s.output[-4000:]
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def write_html(run: PostureRun, path: Path) -> None:
    results = sorted(
        run.results,
        key=lambda r: (not r.failing, r.node, r.lab_controls, r.check),
    )
    page = render_html(
        "report.html.j2",
        run=run,
        results=results,
        nodes=run.by_node(),
        frameworks=run.by_framework(),
        framework_names=FRAMEWORK_NAMES,
        score=score,
        broken=run.broken_scopes,
    )
    path.write_text(page, encoding="utf-8")


def write_reports(run: PostureRun, directory: Path) -> dict[str, Path]:
    paths = {
        "json": directory / "report.json",
        "junit": directory / "junit.xml",
        "html": directory / "report.html",
    }
    write_json(run, paths["json"])
    write_junit(run, paths["junit"])
    write_html(run, paths["html"])
    return paths
