"""`mlseclab attack` without a lab: counters, attribution, the matrix, the probe itself.

The scenarios run against a live lab in tests/e2e (and `bench/`); here the pieces
that decide "blocked" and "detected" are pinned, and the probe program is run for
real on loopback.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlseclab.attack import TACTICS, Outcome, _attribute, choose, matrix
from mlseclab.attack.alerts import AlertWatch, SeenAlert
from mlseclab.attack.positions import EdgeClient, probe_program
from mlseclab.attack.scenarios import SCENARIOS, Finding, delta, drop_counters
from mlseclab.errors import LabError
from mlseclab.spec import load_spec
from mlseclab.targets.local.names import LocalNames
from mlseclab.topology import derive

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "inventories/reference/lab.yaml"
FRAMEWORKS = ROOT.parent / "shared/reference/frameworks.yaml"

RULESET = {
    "nftables": [
        {"metainfo": {"version": "1.1.3"}},
        {"table": {"family": "inet", "name": "mlseclab_router"}},
        {"rule": {"chain": "input", "expr": [{"match": {"op": "=="}}, {"accept": None}]}},
        {
            "rule": {
                "chain": "forward",
                "comment": "clients-to-gateway -> gateway-01",
                "expr": [{"counter": {"packets": 9, "bytes": 540}}, {"accept": None}],
            }
        },
        {
            "rule": {
                "chain": "forward",
                "comment": "invalid",
                "expr": [{"counter": {"packets": 2, "bytes": 80}}, {"drop": None}],
            }
        },
        {
            "rule": {
                "chain": "forward",
                "comment": "dropped: not an allowed flow",
                "expr": [{"counter": {"packets": 245, "bytes": 14700}}],
            }
        },
    ]
}


def test_drop_counters_count_only_rules_that_do_not_accept() -> None:
    got = drop_counters(RULESET)
    assert got == {"forward/invalid": 2, "forward/dropped: not an allowed flow": 245}
    later = json.loads(json.dumps(RULESET))
    later["nftables"][-1]["rule"]["expr"][0]["counter"]["packets"] = 300
    assert delta(got, drop_counters(later)) == {"forward/dropped: not an allowed flow": 55}


def test_unknown_scenario_is_refused_with_a_suggestion() -> None:
    with pytest.raises(LabError, match="did you mean 'key-guessing'"):
        choose(["key-guesing"], "lab.yaml")
    assert [s.id for s in choose(["exfiltration"], "lab.yaml")] == ["exfiltration"]
    assert len(choose([], "lab.yaml")) == len(SCENARIOS)


def test_every_scenario_cites_known_atlas_and_owasp_ids() -> None:
    frameworks = yaml.safe_load(FRAMEWORKS.read_text()) if FRAMEWORKS.is_file() else None
    in_matrix = {t for _, techniques in TACTICS for t in techniques}
    for s in SCENARIOS:
        assert s.atlas and s.owasp, s.id
        for t in s.atlas:
            assert t in in_matrix, f"{s.id}: {t} is in no tactic of the report's matrix"
        if frameworks is not None:
            text = json.dumps(frameworks)
            for t in s.atlas:
                assert t.split(".")[0] + "." + t.split(".")[1] in text, (s.id, t)
            for o in s.owasp:
                assert o in text, (s.id, o)


def _outcome(sid: str, started: float, blocked: bool = True, labels=None) -> Outcome:
    s = next(x for x in SCENARIOS if x.id == sid)
    return Outcome(s, Finding(blocked, [], alert_labels=labels or {}), started, started + 5)


def test_alerts_are_attributed_by_time_and_labels_never_from_before_the_run() -> None:
    watch = AlertWatch("cfg", "obs-01", "10.0.0.1")
    t0 = 1000.0

    def seen(name: str, starts: float, last: float, **labels: str) -> None:
        watch.seen[(name, starts, json.dumps(labels))] = SeenAlert(
            name, labels, starts, starts, last
        )

    seen("MlseclabGatewayAuthFailures", t0 - 300, t0 + 60, node="gateway-01")  # before the run
    seen("MlseclabEgressBlocked", t0 + 32, t0 + 200, node="rag-01")
    seen("MlseclabEgressBlocked", t0 + 12, t0 + 200, node="other")  # wrong node
    outcomes = [
        _outcome("gateway-unauthenticated", t0 + 1),
        _outcome("node-discovery", t0 + 10, labels={"MlseclabEgressBlocked": {"node": "rag-01"}}),
        _outcome("lateral-movement", t0 + 20, labels={"MlseclabEgressBlocked": {"node": "rag-01"}}),
        _outcome("exfiltration", t0 + 40, labels={"MlseclabEgressBlocked": {"node": "rag-01"}}),
    ]
    _attribute(outcomes, watch, t0)
    unauth, discovery, lateral, exfil = outcomes
    assert not unauth.detected  # an alert already firing before the attack is no detection
    # the alert began 22 s after node-discovery, when lateral-movement had begun: both count
    assert discovery.detections[0]["delay_seconds"] == 22.0
    assert discovery.detections[0]["shared_with"] == ["lateral-movement", "exfiltration"]
    assert lateral.detections[0]["delay_seconds"] == 12.0
    assert exfil.detections[0]["already_firing"] is True  # still firing from node-discovery
    assert [o.verdict for o in outcomes] == ["blocked"] + ["blocked, detected"] * 3
    assert _outcome("exfiltration", t0, blocked=False).verdict == "missed"


def test_the_matrix_shows_the_worst_verdict_per_technique() -> None:
    rows = [
        {"id": "a", "atlas": ["AML.T0006"], "verdict": "blocked, detected"},
        {"id": "b", "atlas": ["AML.T0006", "AML.T0025"], "verdict": "missed"},
    ]
    cells = {c["technique"]: c for col in matrix(rows) for c in col["techniques"]}
    assert cells["AML.T0006"]["verdict"] == "missed"
    assert cells["AML.T0006"]["scenarios"] == ["a", "b"]
    assert cells["AML.T0036"]["verdict"] == ""  # not exercised


def test_the_edge_client_takes_a_free_address_of_the_gateways_segment() -> None:
    topo = derive(load_spec(REFERENCE))
    edge = EdgeClient(topo, LocalNames("reference", Path("/nonexistent")))
    assert edge.segment == "edge"
    assert edge.address == "10.66.20.254"
    assert edge.gateway_address == "10.66.20.1"
    assert edge.netns == "mlsl-reference-client"  # `down --force` finds it by the lab prefix
    assert len(edge.port) <= 15


def test_the_probe_runs_from_stdin_with_its_job_never_in_argv() -> None:
    """The real probe program on loopback: an open port, a refused one."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    open_port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    job = {
        "tcp": [["127.0.0.1", open_port], ["127.0.0.1", closed_port]],
        "timeout": 1.0,
        "secret": "s3cr3t-key",
    }
    program = probe_program(job)
    argv = [sys.executable, "-I", "-"]
    assert "s3cr3t-key" in program and not any("s3cr3t" in a for a in argv)
    try:
        done = subprocess.run(
            argv, input=program, capture_output=True, text=True, timeout=60, check=True
        )
    finally:
        listener.close()
    result = json.loads(done.stdout)
    assert [r["state"] for r in result["tcp"]] == ["open", "refused"]
