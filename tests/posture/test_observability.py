"""Metrics and logs over the management network only.

On the observability node: Prometheus's own view of what it scrapes (its
targets API) and where it listens; systemd-journal-remote's socket. On every
node: the node exporter bound to the node's mgmt address, and the journal
upload to the receiver, proven end to end by a marker line that must arrive in
the receiver's copy of this node's journal.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import pytest
import yaml
from service_state import (
    declared_not_applicable,
    file_states,
    listeners,
    mgmt_addresses,
    mode_findings,
    observability_node,
    other_host,
    run_python,
    secrets,
    unit_properties,
)

from mlseclab.checkout import roles
from mlseclab.posture.plugin import PostureLab, PostureNode, not_applicable

PROMETHEUS_PORT = 9090
EXPORTER_PORT = 9100
JOURNAL_PORT = 19532
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
ALERTMANAGER_PORT = 9093
ALERTMANAGER_DEFAULTS = "/etc/default/prometheus-alertmanager"
SIGNALS_UNIT = "mlseclab-signals.service"
SIGNALS_TEXTFILE = "/var/lib/prometheus/node-exporter/mlseclab_signals.prom"
SIGNALS_FRESH = 60  # seconds: the collector rewrites its textfile every 10
HEARTBEAT_FRESH = 90  # seconds: MlseclabJournalSilent's threshold
LOGS_DIR_DATASET = "logs"
UPLOAD_TLS_DIR = "/etc/mlseclab/tls/journal-upload"
ARRIVAL_SECONDS = 20  # how long a marker may take from the sender's journal to the receiver

_TARGETS_PROBE = r"""
import json, sys, urllib.request
url = json.loads(sys.argv[1])
with urllib.request.urlopen(url, timeout=10) as r:
    data = json.load(r)["data"]
targets = data["activeTargets"]
print(json.dumps([t["scrapeUrl"] for t in targets]))
"""


def _host_port(url: str) -> tuple[str, int]:
    netloc = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = netloc.rpartition(":")
    return host, int(port)


@pytest.mark.roles("observability")
@pytest.mark.control("MLSL-OBS-02", owasp="LLM10", atlas="AML.M0024")
def test_prometheus_scrapes_mgmt_addresses_only(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """Prometheus scrapes every node's exporter on its mgmt address, and nothing elsewhere."""
    mgmt = mgmt_addresses(lab)
    if lab.spec.lab.target == "local":  # the router's drop counters, on the mgmt gateway
        mgmt["router"] = str(lab.spec.networks[lab.spec.mgmt_segment_name()].gateway_address)
    url = f"http://{node.topo.mgmt.ip}:{PROMETHEUS_PORT}/api/v1/targets?state=active"
    live = run_python(host, _TARGETS_PROBE, url)
    wrong = []
    exporters = set()
    # where, not whether: a node whose exporter is down is test_node_exporter_on_mgmt_only's
    # finding on that node (and a target stays "down" for a scrape interval after it is back)
    for scrape_url in live:
        address, port = _host_port(scrape_url)
        if address not in mgmt.values():
            wrong.append(f"scrapes {scrape_url}: not a mgmt address")
        if port == EXPORTER_PORT:
            exporters.add(address)
    missing = sorted(n for n, a in mgmt.items() if a not in exporters)
    if missing:
        wrong.append(f"no exporter target for {missing}")
    # the persisted configuration: static targets only, all on mgmt
    config = yaml.safe_load(host.check_output("cat %s", PROMETHEUS_CONFIG))
    for job in config.get("scrape_configs", []):
        discovery = sorted(k for k in job if k.endswith("_sd_configs"))
        if discovery:
            wrong.append(f"job {job.get('job_name')} discovers targets ({discovery})")
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                if target.rpartition(":")[0] not in mgmt.values():
                    wrong.append(
                        f"{PROMETHEUS_CONFIG}: job {job.get('job_name')} target {target} "
                        "is not on mgmt"
                    )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _process_args(host: Any, unit: str) -> list[str]:
    pid = host.check_output("systemctl show %s -p MainPID --value", unit).strip()
    if pid in ("", "0"):
        return []
    return host.check_output("cat /proc/%s/cmdline | tr '\\0' '\\n'", pid).splitlines()


@pytest.mark.roles("observability")
@pytest.mark.control("MLSL-OBS-03", owasp="LLM10", atlas="AML.M0024")
def test_prometheus_listens_on_mgmt_only(node: PostureNode, host: Any) -> None:
    """Prometheus listens on the mgmt address only, with no admin or lifecycle API."""
    mgmt = node.topo.mgmt.ip
    want = f"--web.listen-address={mgmt}:{PROMETHEUS_PORT}"
    wrong = []
    sockets = sorted(
        f"{ls.address}:{ls.port}" for ls in listeners(host) if "prometheus" in ls.processes
    )
    if sockets != [f"{mgmt}:{PROMETHEUS_PORT}"]:
        wrong.append(f"prometheus listens on {sockets}, expected only {mgmt}:{PROMETHEUS_PORT}")
    args = _process_args(host, "prometheus.service")
    persisted = host.check_output("cat /etc/default/prometheus")
    for where, text in (
        ("the running process", " ".join(args)),
        ("/etc/default/prometheus", persisted),
    ):
        if want not in text.split() and want not in text.replace('"', " ").split():
            wrong.append(f"{where} lacks {want}")
        risky = [
            f
            for f in (
                "--web.enable-admin-api",
                "--web.enable-lifecycle",
                "--web.enable-remote-write-receiver",
            )
            if f in text
        ]
        if risky:
            wrong.append(f"{where} enables {risky}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.roles("observability")
@pytest.mark.control("MLSL-OBS-04", "MLSL-OBS-05", owasp="LLM10", atlas="AML.M0024, AML.M0005")
def test_journal_remote_listens_on_mgmt(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The journal receiver listens on the mgmt address only, over HTTPS, into the logs dataset."""
    mgmt = node.topo.mgmt.ip
    wrong = []
    socket_props = unit_properties(
        host, "systemd-journal-remote.socket", ("Listen", "ActiveState", "UnitFileState")
    )
    if socket_props.get("Listen") != f"{mgmt}:{JOURNAL_PORT} (Stream)":
        wrong.append(
            f"the socket unit listens on {socket_props.get('Listen')!r}, "
            f"expected {mgmt}:{JOURNAL_PORT}"
        )
    if (socket_props.get("ActiveState"), socket_props.get("UnitFileState")) != (
        "active",
        "enabled",
    ):
        wrong.append(
            f"the socket unit is {socket_props.get('ActiveState')}/"
            f"{socket_props.get('UnitFileState')}"
        )
    sockets = sorted(
        {f"{ls.address}:{ls.port}" for ls in listeners(host) if ls.port == JOURNAL_PORT}
    )
    if sockets != [f"{mgmt}:{JOURNAL_PORT}"]:
        wrong.append(f"port {JOURNAL_PORT} is open on {sockets}, expected only {mgmt}")
    mount = next(
        (m.path for m in lab.spec.nodes[node.name].mounts if m.dataset == LOGS_DIR_DATASET), None
    )
    exec_start = unit_properties(host, "systemd-journal-remote.service", ("ExecStart",)).get(
        "ExecStart", ""
    )
    argv = exec_start.split("argv[]=", 1)[-1].split(" ;", 1)[0].split()
    if not any(a.startswith("--listen-https=") for a in argv):
        wrong.append(f"the receiver does not listen with HTTPS: {argv}")
    if not any(a.startswith("--key=/run/credentials/") for a in argv):
        wrong.append("the receiver's key is not handed over as a systemd credential")
    if mount is None or f"--output={mount.rstrip('/')}/" not in argv:
        wrong.append(
            f"the receiver does not write to the {LOGS_DIR_DATASET} dataset ({mount}): {argv}"
        )
    else:
        wrong += mode_findings(
            file_states(host, [mount])[mount],
            mode=0o750,
            owner="systemd-journal-remote",
            group="systemd-journal-remote",
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OBS-06", owasp="LLM10", atlas="AML.M0024")
def test_node_exporter_on_mgmt_only(node: PostureNode, host: Any) -> None:
    """The node exporter runs and listens on this node's mgmt address only."""
    mgmt = node.topo.mgmt.ip
    want = f"--web.listen-address={mgmt}:{EXPORTER_PORT}"
    wrong = []
    props = unit_properties(
        host, "prometheus-node-exporter.service", ("ActiveState", "UnitFileState")
    )
    if (props.get("ActiveState"), props.get("UnitFileState")) != ("active", "enabled"):
        wrong.append(
            f"prometheus-node-exporter is {props.get('ActiveState')}/{props.get('UnitFileState')}"
        )
    sockets = sorted(
        f"{ls.address}:{ls.port}" for ls in listeners(host) if "prometheus-node" in ls.processes
    )
    if sockets != [f"{mgmt}:{EXPORTER_PORT}"]:
        wrong.append(f"the exporter listens on {sockets}, expected only {mgmt}:{EXPORTER_PORT}")
    args = _process_args(host, "prometheus-node-exporter.service")
    if want not in args:
        wrong.append(f"the running exporter lacks {want}: {args[1:]}")
    persisted = host.check_output("cat /etc/default/prometheus-node-exporter")
    if want not in persisted.replace('"', " ").split():
        wrong.append(f"/etc/default/prometheus-node-exporter lacks {want}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _effective_upload_config(host: Any) -> dict[str, str]:
    """journal-upload.conf and its drop-ins in the order systemd reads them (the last one wins)."""
    text = host.check_output("systemd-analyze cat-config systemd/journal-upload.conf")
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith(("#", ";")):
            values[key.strip()] = value.strip()
    return values


@pytest.mark.control("MLSL-OS-19", cis="6.1.1.2.1, 6.1.1.2.2, 6.1.1.2.3", atlas="AML.M0024")
def test_journal_upload_to_observability(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """This node's journal is uploaded over HTTPS to the receiver on mgmt, and it arrives."""
    receiver = observability_node(lab)
    if receiver is None:
        not_applicable("the lab has no observability node to receive journals")
    if receiver.name == node.name:
        declared = declared_not_applicable(host)
        assert "MLSL-OS-19" in declared, (
            f"{node.name} is the receiver but the base role did not report MLSL-OS-19 N/A"
        )
        not_applicable(f"{node.name} is the journal receiver ({declared['MLSL-OS-19']})")
    url = f"https://{receiver.topo.mgmt.ip}:{JOURNAL_PORT}"
    config = _effective_upload_config(host)
    wrong = []
    if config.get("URL") != url:
        wrong.append(f"upload URL {config.get('URL')!r}, expected {url!r}")
    for key in ("TrustedCertificateFile", "ServerCertificateFile", "ServerKeyFile"):
        if not config.get(key):
            wrong.append(f"journal-upload.conf has no {key}")
    if config.get("TrustedCertificateFile"):
        ca_here = host.check_output("sha256sum %s", config["TrustedCertificateFile"]).split()[0]
        if ca_here != hashlib.sha256(secrets(lab).ca_cert.read_bytes()).hexdigest():
            wrong.append(f"{config['TrustedCertificateFile']} is not the lab CA")
    props = unit_properties(
        host,
        "systemd-journal-upload.service",
        ("ActiveState", "SubState", "UnitFileState", "Restart"),
    )
    if (props.get("ActiveState"), props.get("SubState"), props.get("UnitFileState")) != (
        "active",
        "running",
        "enabled",
    ):
        wrong.append(
            f"systemd-journal-upload is {props.get('ActiveState')}/{props.get('SubState')}/"
            f"{props.get('UnitFileState')}"
        )
    if props.get("Restart") != "always":
        wrong.append(
            f"systemd-journal-upload Restart={props.get('Restart')}, "
            "expected always (it must retry)"
        )
    wrong += mode_findings(
        file_states(host, [f"{UPLOAD_TLS_DIR}/node.key"])[f"{UPLOAD_TLS_DIR}/node.key"],
        mode=0o600,
        owner="root",
    )
    # live: a marker written here must reach the receiver's copy of this node's journal
    marker = f"mlseclab-posture-{uuid.uuid4().hex}"
    host.check_output("logger -t mlseclab-posture %s", marker)
    remote = other_host(lab, receiver.name)
    mount = next(
        (m.path for m in lab.spec.nodes[receiver.name].mounts if m.dataset == LOGS_DIR_DATASET),
        "/srv/logs",
    )
    journal = f"{mount.rstrip('/')}/remote-{node.topo.mgmt.ip}.journal"
    arrived = False
    deadline = time.monotonic() + ARRIVAL_SECONDS
    while not arrived and time.monotonic() < deadline:
        found = remote.run(
            "journalctl --file %s -t mlseclab-posture -o cat --no-pager -n 50", journal
        )
        arrived = marker in found.stdout
        if not arrived:
            time.sleep(1)
    if not arrived:
        wrong.append(
            f"a marker logged here did not reach {receiver.name}:{journal} "
            f"within {ARRIVAL_SECONDS}s"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


_ALERTING_PROBE = r"""
import json, sys, urllib.request
base = json.loads(sys.argv[1])
def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)["data"]
rules = get("/api/v1/rules")
managers = get("/api/v1/alertmanagers")
print(json.dumps({
    "alerts": {r["name"]: r.get("health", "") for g in rules["groups"] for r in g["rules"]
               if r.get("type") == "alerting"},
    "alertmanagers": [a["url"] for a in managers["activeAlertmanagers"]],
}))
"""


def _rule_alerts() -> set[str]:
    doc = yaml.safe_load(
        (roles() / "observability" / "files" / "mlseclab-alerts.yml").read_text(encoding="utf-8")
    )
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


@pytest.mark.roles("observability")
@pytest.mark.control("MLSL-OBS-07", owasp="LLM10", atlas="AML.M0024")
def test_detection_rules_evaluated_and_routed(node: PostureNode, host: Any) -> None:
    """Prometheus evaluates every detection rule of the lab and sends its alerts to an
    Alertmanager that listens on the mgmt address only, with no cluster port."""
    mgmt = node.topo.mgmt.ip
    live = run_python(host, _ALERTING_PROBE, f"http://{mgmt}:{PROMETHEUS_PORT}")
    wrong = []
    missing = sorted(_rule_alerts() - set(live["alerts"]))
    if missing:
        wrong.append(f"Prometheus does not evaluate {missing}")
    broken = sorted(n for n, h in live["alerts"].items() if h not in ("ok", "unknown"))
    if broken:
        wrong.append(f"rules that fail to evaluate: {broken}")
    want = f"http://{mgmt}:{ALERTMANAGER_PORT}/api/v2/alerts"
    if live["alertmanagers"] != [want]:
        wrong.append(f"Prometheus sends alerts to {live['alertmanagers']} (expected [{want}])")
    tcp = sorted(
        f"{ls.address}:{ls.port}"
        for ls in listeners(host)
        if any(p.startswith("prometheus-ale") for p in ls.processes)
    )
    udp = [
        str(ls)
        for ls in listeners(host, "udp")
        if any(p.startswith("prometheus-ale") for p in ls.processes)
    ]
    if tcp != [f"{mgmt}:{ALERTMANAGER_PORT}"] or udp:
        wrong.append(
            f"Alertmanager listens on {tcp + udp}, expected only {mgmt}:{ALERTMANAGER_PORT} "
            "(no cluster port)"
        )
    args = host.check_output("cat %s", ALERTMANAGER_DEFAULTS).replace('"', " ").split()
    for flag in (f"--web.listen-address={mgmt}:{ALERTMANAGER_PORT}", "--cluster.listen-address="):
        if flag not in args:
            wrong.append(f"{ALERTMANAGER_DEFAULTS} lacks {flag}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


_QUERY_PROBE = r"""
import json, sys, urllib.parse, urllib.request
base, query = json.loads(sys.argv[1])
url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
with urllib.request.urlopen(url, timeout=10) as r:
    data = json.load(r)["data"]["result"]
print(json.dumps({json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in data}))
"""


def _textfile_values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.control("MLSL-OBS-08", owasp="LLM10", atlas="AML.M0024")
def test_security_signals_collected(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The node's security signals (firewall drops; gateway, model and RAG events) are
    collected by a sandboxed service, every source reads, the observability node's
    Prometheus has them, and the node's journal heartbeat arrives there."""
    props = unit_properties(
        host,
        SIGNALS_UNIT,
        ("ActiveState", "NoNewPrivileges", "ProtectSystem", "CapabilityBoundingSet"),
    )
    wrong = []
    if props.get("ActiveState") != "active":
        wrong.append(f"{SIGNALS_UNIT} is {props.get('ActiveState')}")
    if props.get("NoNewPrivileges") != "yes" or props.get("ProtectSystem") != "strict":
        wrong.append(f"{SIGNALS_UNIT} is not sandboxed: {props}")
    caps = set(props.get("CapabilityBoundingSet", "").split())
    if caps - {"cap_net_admin", "cap_dac_read_search"}:
        wrong.append(f"{SIGNALS_UNIT} may use {sorted(caps)}")
    now = float(host.check_output("date +%s.%N"))
    text = host.run("cat %s", SIGNALS_TEXTFILE)
    values = _textfile_values(text.stdout) if text.rc == 0 else {}
    last = values.get("mlseclab_signals_last_run_timestamp_seconds", 0.0)
    if now - last > SIGNALS_FRESH:
        wrong.append(f"{SIGNALS_TEXTFILE} was last written {now - last:.0f} s ago")
    want = {
        "firewall",
        "access_log" if node.role == "gateway" else "",
        "journal" if node.role in ("inference", "rag") else "",
        "heartbeats" if node.role == "observability" else "",
    } - {""}
    up = {
        k.split('source="', 1)[1].rstrip('"}'): v
        for k, v in values.items()
        if k.startswith("mlseclab_signals_source_up")
    }
    bad = sorted(s for s in want if up.get(s) != 1)
    if bad:
        wrong.append(f"sources not read: {bad} (have {up})")
    obs = observability_node(lab)
    if obs is not None:
        base = f"http://{obs.topo.mgmt.ip}:{PROMETHEUS_PORT}"
        obs_host = other_host(lab, obs.name)
        scraped = run_python(
            obs_host,
            _QUERY_PROBE,
            [base, f'mlseclab_signals_last_run_timestamp_seconds{{node="{node.name}"}}'],
        )
        if not scraped or now - max(scraped.values()) > SIGNALS_FRESH + 30:
            wrong.append(
                f"{obs.name}'s Prometheus has no fresh signals from {node.name}: {scraped}"
            )
        if node.name != obs.name:
            beat = run_python(
                obs_host,
                _QUERY_PROBE,
                [
                    base,
                    f'mlseclab_journal_last_heartbeat_timestamp_seconds{{sender="{node.name}"}}',
                ],
            )
            if not beat or now - max(beat.values()) > HEARTBEAT_FRESH:
                wrong.append(f"no fresh journal heartbeat from {node.name} at {obs.name}: {beat}")
        elif lab.spec.lab.target == "local":
            router = run_python(obs_host, _QUERY_PROBE, [base, 'mlseclab_router_up{job="router"}'])
            if list(router.values()) != [1.0]:
                wrong.append(f"the lab router's drop counters are not scraped: {router}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
