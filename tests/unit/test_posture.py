"""The posture plugin, its reports and the tamper table, without a lab.

A tiny suite of synthetic checks (no SSH: they only take ``node``) runs through
the real plugin in a separate pytest process; its results feed the real report
writers. The tamper table is held against the real posture suite's collection.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from helpers.labs import REFERENCE, reference_text, write_lab
from mlseclab import checkout
from mlseclab.drift import configuration_findings, render_diff
from mlseclab.harden import HardenResult, HostSummary, TaskResult
from mlseclab.posture.report import score, write_reports
from mlseclab.posture.results import FAILING, NOT_COUNTED, CheckResult, Outcome
from mlseclab.posture.runner import PostureRun, ScopeRun

SUITE = '''
import pytest
from mlseclab.posture.plugin import not_applicable

@pytest.mark.control("MLSL-T-01", cis="1.1.1", owasp="LLM10")
def test_passes(node):
    """It holds everywhere."""

@pytest.mark.control("MLSL-T-02", devsec="os-05")
@pytest.mark.roles("gateway")
def test_fails_on_gateway(node):
    """It fails with evidence."""
    assert node.role != "gateway", f"found <script>{node.name}</script> on {node.name}"

@pytest.mark.control("MLSL-T-03", cis="1.5.1")
def test_not_applicable(node):
    """A container cannot have it."""
    if node.runs_as_container:
        not_applicable("kernel.* sysctls are host-wide")

@pytest.mark.control("MLSL-T-04")
@pytest.mark.roles("inference")
def test_waived(node):
    """Waived with a reason."""
    assert False, "broken but waived"

@pytest.mark.control("MLSL-T-05")
def test_lab_scope(lab):
    """The operator's view."""
    assert lab.spec.lab.name
'''


def write_up_inventory(spec: Path, state: Path, kind: str) -> None:
    """The inventory `up` would have written for a lab whose nodes run as ``kind``."""
    from mlseclab.inventory import render_inventory
    from mlseclab.spec import load_spec
    from mlseclab.state import LabHome
    from mlseclab.topology import derive

    topo = derive(load_spec(spec))
    target = "local" if kind == "container" else "proxmox"
    state.mkdir(parents=True, exist_ok=True)
    text = render_inventory(topo, LabHome(topo.spec.lab.name, state), kind, target)
    (state / "inventory.yml").write_text(text, encoding="utf-8")


def _run_plugin(
    tmp_path: Path, spec: Path, *args: str, suite: str = SUITE
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, object]]]:
    (tmp_path / "suite").mkdir(exist_ok=True)
    (tmp_path / "suite" / "test_synthetic.py").write_text(suite, encoding="utf-8")
    results = tmp_path / "results.json"
    write_up_inventory(spec, tmp_path / "state", "container")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path / "suite"),
            "-p",
            "no:pytest11.testinfra",
            "-p",
            "no:cacheprovider",
            "-p",
            "mlseclab.posture.plugin",
            "--mlseclab-spec",
            str(spec),
            "--mlseclab-state",
            str(tmp_path / "state"),
            "--mlseclab-results",
            str(results),
            "-o",
            "addopts=",
            "--rootdir",
            str(tmp_path),
            "-q",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    data = json.loads(results.read_text()) if results.exists() else []
    return proc, data


@pytest.fixture
def waived_spec(tmp_path: Path) -> Path:
    text = reference_text().replace(
        "  waivers: []",
        "  waivers:\n"
        "    - {control: MLSL-T-04, nodes: [inference-01], reason: accepted until the GPU arrives}",
    )
    return write_lab(tmp_path, text)


def test_outcomes_by_node_with_waivers_and_not_applicable(
    tmp_path: Path, waived_spec: Path
) -> None:
    proc, results = _run_plugin(tmp_path, waived_spec)
    assert proc.returncode == 1, proc.stdout[-2000:]  # one real failure
    by = {(r["check"], r["node"]): r for r in results}
    assert by[("test_passes", "rag-01")]["outcome"] == "passed"
    failed = by[("test_fails_on_gateway", "gateway-01")]
    assert failed["outcome"] == "failed"
    assert "<script>gateway-01</script>" in failed["evidence"]
    assert failed["controls"]["devsec"] == ["os-05"]
    na = by[("test_not_applicable", "obs-01")]
    assert (na["outcome"], na["evidence"]) == ("not_applicable", "kernel.* sysctls are host-wide")
    waived = by[("test_waived", "inference-01")]
    assert (waived["outcome"], waived["observed"]) == ("waived", "failed")
    assert waived["waiver"] == "accepted until the GPU arrives"
    assert by[("test_lab_scope", "lab")]["outcome"] == "passed"
    # roles() restricts: the gateway check ran on the gateway only
    assert {n for c, n in by if c == "test_fails_on_gateway"} == {"gateway-01"}
    assert len(results) == 5 + 1 + 5 + 1 + 1


def test_node_filter_and_lab_scope(tmp_path: Path) -> None:
    _, one = _run_plugin(tmp_path, REFERENCE, "--mlseclab-node", "rag-01")
    assert {r["node"] for r in one} == {"rag-01"}
    _, lab = _run_plugin(tmp_path, REFERENCE, "--mlseclab-lab-scope")
    assert [r["check"] for r in lab] == ["test_lab_scope"]


def test_a_check_without_control_ids_is_refused(tmp_path: Path) -> None:
    proc, _ = _run_plugin(tmp_path, REFERENCE, suite="def test_bare(node):\n    pass\n")
    assert proc.returncode != 0
    assert "must carry @pytest.mark.control" in proc.stdout + proc.stderr


def test_testinfra_own_plugin_is_refused(tmp_path: Path) -> None:
    """testinfra's `host` fixture defaults to the LOCAL machine: running with it is an error."""
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_x.py").write_text(SUITE, encoding="utf-8")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", str(tmp_path / "suite")),
            *("-p", "mlseclab.posture.plugin", "--mlseclab-spec", str(REFERENCE)),
            *("-o", "addopts=", "-q"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "-p no:pytest11.testinfra" in proc.stdout + proc.stderr


def test_results_round_trip_through_their_json(tmp_path: Path, waived_spec: Path) -> None:
    """The runner rebuilds what the plugin wrote, and writes it back byte for byte."""
    _, raw = _run_plugin(tmp_path, waived_spec)
    results = [CheckResult.from_dict(r) for r in raw]
    assert [r.as_dict() for r in results] == raw
    assert json.dumps([r.as_dict() for r in results]) == json.dumps(raw)
    assert {r.outcome for r in results} == {
        Outcome.PASSED,
        Outcome.FAILED,
        Outcome.NOT_APPLICABLE,
        Outcome.WAIVED,
    }
    assert {o.value for o in Outcome} >= {str(r["outcome"]) for r in raw}
    assert FAILING.isdisjoint(NOT_COUNTED) and Outcome.PASSED not in FAILING | NOT_COUNTED
    with pytest.raises(ValueError):
        CheckResult.from_dict({**raw[0], "outcome": "passed-ish"})


def test_reports_json_junit_html(tmp_path: Path, waived_spec: Path) -> None:
    _, raw = _run_plugin(tmp_path, waived_spec)
    results = [CheckResult.from_dict(r) for r in raw]
    run = PostureRun(lab="reference", started="now", seconds=1.0)
    run.scopes = [ScopeRun("all", 1, 1.0, results, "")]
    assert not run.passed
    fw = run.by_framework()
    assert score(fw["owasp"]["LLM10"]) == "5/5"  # test_passes on each of the 5 nodes
    assert score(fw["lab"]["MLSL-T-03"]) == "0/0 (5 not applicable)"
    out = tmp_path / "report"
    out.mkdir()
    paths = write_reports(run, out)
    data = json.loads(paths["json"].read_text())
    assert data["counts"]["failed"] == 1 and data["passed"] is False
    assert data["results"] == raw
    suites = ET.parse(paths["junit"]).getroot()  # noqa: S314 - our own report
    gw = next(s for s in suites if s.get("name") == "gateway-01")
    assert gw.get("failures") == "1"
    failure = next(c for c in gw if c.get("name") == "test_fails_on_gateway").find("failure")
    assert failure is not None and "gateway-01" in (failure.text or "")
    page = paths["html"].read_text()
    assert "&lt;script&gt;gateway-01&lt;/script&gt;" in page and "<script>" not in page
    assert "accepted until the GPU arrives" in page
    assert "kernel.* sysctls are host-wide" in page


def test_a_run_that_collected_nothing_is_not_a_pass() -> None:
    run = PostureRun(lab="x", started="now", seconds=0.0)
    run.scopes = [ScopeRun("rag-01", 4, 0.1, [], "ERROR: usage")]
    assert not run.passed and run.broken_scopes


def test_check_mode_changes_become_configuration_findings() -> None:
    result = HardenResult(
        ident="x",
        artifacts=Path("/nonexistent"),
        status="successful",
        hosts={"gateway-01": HostSummary(changed=1)},
        results=[
            TaskResult(
                "gateway-01",
                "Install the API key hashes | MLSL-GW-03, OWASP LLM10",
                "changed",
                diff=[{"before": {"mode": "0644"}, "after": {"mode": "0600"}}],
            ),
            TaskResult("gateway-01", "Read something", "ok"),
        ],
        seconds=1.0,
    )
    (finding,) = configuration_findings(result)
    assert finding.node == "gateway-01" and finding.controls == ("MLSL-GW-03",)
    assert '- "mode": "0644"' in finding.detail and '+ "mode": "0600"' in finding.detail
    assert render_diff([{"before": "a\n", "after": "a\n"}]) == ""


# -- the tamper table ------------------------------------------------------------------


def _posture_checks() -> set[str]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", str(checkout.posture_suite())),
            *("--collect-only", "-q"),
            *("-p", "no:pytest11.testinfra", "-p", "no:cacheprovider"),
            *("-p", "mlseclab.posture.plugin", "--mlseclab-spec", str(REFERENCE)),
            *("-o", "addopts="),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=checkout.root(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    names = set()
    for line in proc.stdout.splitlines():
        if "::" in line:
            names.add(line.split("::")[-1].split("[")[0])
    assert names
    return names


def test_every_posture_check_has_a_tamper_that_breaks_it() -> None:
    from posture.tampers import all_tampers

    checks = _posture_checks()
    tampers = all_tampers()
    covered = {name for t in tampers for name in t.breaks}
    assert not checks - covered, f"posture checks no tamper breaks: {sorted(checks - covered)}"
    assert not covered - checks, f"tampers name checks that do not exist: {covered - checks}"
    names = Counter(t.name for t in tampers)
    assert not [n for n, c in names.items() if c > 1], names
    from mlseclab.spec import load_spec

    nodes = set(load_spec(REFERENCE).nodes)
    assert {t.node for t in tampers} <= nodes
    for t in tampers:
        assert t.revert.strip() and (t.apply.strip() or t.router_apply.strip()), t.name
        assert bool(t.router_apply) == bool(t.router_revert), t.name


def test_a_waiver_for_a_control_no_check_carries_is_a_spec_error(tmp_path: Path) -> None:
    from mlseclab.commands.common import Context
    from mlseclab.commands.verify import check_waivers, posture_control_ids
    from mlseclab.errors import SpecError
    from mlseclab.spec import load_spec
    from mlseclab.state import LabHome
    from mlseclab.topology import derive

    assert "MLSL-NET-01" in posture_control_ids()
    text = reference_text().replace(
        "  waivers: []",
        "  waivers:\n    - {control: MLSL-NET-01, reason: a real control and a real reason}\n"
        "    - {control: MLSL-NET-99, reason: a typo that would waive nothing}",
    )
    path = write_lab(tmp_path, text)
    spec = load_spec(path)
    ctx = Context(path, spec, derive(spec), LabHome.for_lab(spec.lab.name), "local")
    with pytest.raises(SpecError) as err:
        check_waivers(ctx)
    (line,) = err.value.lines
    assert line.startswith(f"{path}:")
    assert "posture.waivers[1].control: MLSL-NET-99 is not a control any posture check" in line
    assert "MLSL-NET-01" in line


def test_an_expired_waiver_no_longer_applies() -> None:
    import datetime as dt

    from mlseclab.posture import waiver_for
    from mlseclab.spec import Waiver

    today = dt.date.today()

    def waivers(expires: dt.date | None, nodes: tuple[str, ...] = ("all",)) -> list[Waiver]:
        reason = "a reason long enough"
        return [Waiver(control="MLSL-NET-01", reason=reason, nodes=list(nodes), expires=expires)]

    assert waiver_for(waivers(None), ["MLSL-NET-01"], "rag-01") == "a reason long enough"
    assert waiver_for(waivers(today), ["MLSL-NET-01"], "rag-01") == "a reason long enough"
    assert waiver_for(waivers(today - dt.timedelta(days=1)), ["MLSL-NET-01"], "rag-01") == ""
    assert waiver_for(waivers(today + dt.timedelta(days=400)), ["MLSL-NET-02"], "rag-01") == ""
    assert waiver_for(waivers(None, ("gateway-01",)), ["MLSL-NET-01"], "rag-01") == ""
    assert waiver_for(waivers(None, ("rag-01",)), ["MLSL-X-01", "MLSL-NET-01"], "rag-01")
