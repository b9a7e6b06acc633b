"""The reference lab, provisioned and hardened by `mlseclab up`, serving a real model.

The lab is the reference lab renamed ``hard`` on 10.78.0.0/16. Every check here
is one of the issue's done-criteria, observed from outside (the operator's
host) or from inside a node over SSH, never by reading what the roles wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import socket
import ssl
import stat
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.labs import derived_lab_text, mlseclab, running_lab, write_lab
from mlseclab.spec import LabSpec
from mlseclab.targets.local.names import LocalNames
from mlseclab.topology import Topology, derive

pytestmark = pytest.mark.e2e


@dataclass
class Hardened:
    spec_path: Path
    spec: LabSpec
    topo: Topology
    state: Path
    names: LocalNames

    @property
    def secrets(self) -> Path:
        return self.state / "hard" / "secrets"

    @property
    def ssh_config(self) -> Path:
        return self.state / "hard" / "ssh_config"

    def ssh(self, node: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), node, command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return mlseclab(
            *args,
            "-f",
            str(self.spec_path),
            env={"MLSECLAB_STATE_DIR": str(self.state)},
            timeout=3600,
        )

    def gateway(
        self, path: str, body: dict[str, Any] | None = None, key: str | None = "operator"
    ) -> tuple[int, dict[str, Any]]:
        """A request to the gateway from the operator's host, TLS verified with the lab CA."""
        ctx = ssl.create_default_context(cafile=str(self.secrets / "ca.crt"))
        edge = self.topo.nodes["gateway-01"].interface_on("edge").ip  # type: ignore[union-attr]
        headers = {"Content-Type": "application/json"}
        if key is not None:
            token = (self.secrets / "clients" / f"{key}.key").read_text(encoding="utf-8").strip()
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"https://{edge}{path}", data=data, headers=headers, method="POST" if data else "GET"
        )
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=120) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hardened]:
    base = tmp_path_factory.mktemp("hard")
    spec_path = write_lab(base, derived_lab_text("hard", 78, base / "data"), corpus=True)
    state = base / "state"
    with running_lab(spec_path, state, harden=True) as spec:
        yield Hardened(spec_path, spec, derive(spec), state, LocalNames("hard", base / "data"))


def test_real_embeddings_through_the_gateway(lab: Hardened) -> None:
    status, body = lab.gateway(
        "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ["a secure lab", "a safe lab"]}
    )
    assert status == 200, body
    vectors = [d["embedding"] for d in body["data"]]
    assert [len(v) for v in vectors] == [384, 384]
    a, b = vectors
    cosine = sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )
    assert 0.5 < cosine < 0.9999  # related sentences, not the same vector


def test_real_completion_through_the_gateway(lab: Hardened) -> None:
    status, body = lab.gateway(
        "/v1/chat/completions",
        {
            "model": "gemma-3-270m",
            "max_tokens": 16,
            "temperature": 0,
            "messages": [{"role": "user", "content": "The capital of France is"}],
        },
    )
    assert status == 200, body
    assert body["usage"]["completion_tokens"] > 0
    assert isinstance(body["choices"][0]["message"]["content"], str)


def test_no_key_is_401_and_a_wrong_key_too(lab: Hardened) -> None:
    assert lab.gateway("/v1/models", key=None)[0] == 401
    (lab.secrets / "clients" / "intruder.key").write_text("not-a-lab-key\n", encoding="utf-8")
    assert lab.gateway("/v1/models", key="intruder")[0] == 401


def test_endpoints_off_the_allowlist_are_404(lab: Hardened) -> None:
    for path in ("/docs", "/openapi.json", "/v1/internal", "/"):
        assert lab.gateway(path)[0] == 404, path


def _psql_as_rag(lab: Hardened, sql: str) -> subprocess.CompletedProcess[str]:
    """psql on rag-01 with the RAG service's own (read-only) credential; never in argv."""
    data = lab.topo.nodes["vectordb-01"].interface_on("data").ip  # type: ignore[union-attr]
    conn = (
        f"host={data} dbname=rag user=rag_query sslmode=verify-full "
        "sslrootcert=/etc/mlseclab/rag/ca.crt"
    )
    password = "$(cat /etc/mlseclab/rag/credentials/db-query-password)"
    command = f'PGPASSWORD={password} psql -At "{conn}" -c "{sql}"'
    return lab.ssh("rag-01", f"sudo sh -c '{command}'")


def test_the_query_role_cannot_insert(lab: Hardened) -> None:
    read = _psql_as_rag(lab, "SELECT count(*) FROM rag.documents")
    assert read.returncode == 0, read.stderr
    write = _psql_as_rag(lab, "INSERT INTO rag.documents DEFAULT VALUES")
    assert write.returncode != 0
    assert "permission denied" in write.stderr


def test_rag_cannot_reach_inference_on_ssh(lab: Hardened) -> None:
    inference = lab.topo.nodes["inference-01"]
    for address in inference.addresses:
        probe = lab.ssh("rag-01", f"nc -z -w 2 {address} 22")
        assert probe.returncode != 0, f"rag-01 reached inference-01 {address}:22"


def test_inference_refuses_to_start_when_a_model_byte_changes(lab: Hardened) -> None:
    model = lab.names.dataset_dir("models") / "all-MiniLM-L6-v2-f16.gguf"
    original = model.read_bytes()[4096:4097]
    flipped = bytes([original[0] ^ 0xFF])
    try:
        with model.open("r+b") as fh:
            fh.seek(4096)
            fh.write(flipped)
        restart = lab.ssh("inference-01", "sudo systemctl restart mlseclab-inference.service")
        assert restart.returncode != 0
        state = lab.ssh("inference-01", "systemctl is-active mlseclab-inference.service")
        assert state.stdout.strip() in ("failed", "inactive", "activating")
        log = lab.ssh(
            "inference-01", "sudo journalctl -u mlseclab-inference.service -n 30 --no-pager"
        )
        assert "sha256" in log.stdout.lower() or "mismatch" in log.stdout.lower(), log.stdout
    finally:
        with model.open("r+b") as fh:
            fh.seek(4096)
            fh.write(original)
        lab.ssh(
            "inference-01",
            "sudo systemctl reset-failed mlseclab-inference.service; "
            "sudo systemctl restart mlseclab-inference.service",
        )
    assert (
        lab.ssh("inference-01", "systemctl is-active mlseclab-inference.service").stdout.strip()
        == "active"
    )
    # "active" is before the models are loaded: the tests after this one need it serving
    serving = lab.ssh(
        "inference-01",
        "for i in $(seq 1 180); do ss -Hltn 'sport = :8000' | grep -q . && exit 0; sleep 1; done;"
        " exit 1",
    )
    assert serving.returncode == 0, "the model server did not listen again within 180 s"


# --- the RAG service ---------------------------------------------------------------------------

RESTRICTED_QUESTION = (
    "What happened in incident IR-2025-03 when a policy on the chunk table allowed every row?"
)


def _rag(lab: Hardened, client: str, question: str) -> tuple[int, dict[str, Any]]:
    """`mlseclab rag query --as CLIENT --json`: the operator's CLI, through the gateway."""
    proc = lab.cli("rag", "query", "--as", client, question, "--json")
    assert proc.returncode in (0, 1, 2), proc.stderr[-2000:]
    body: dict[str, Any] = json.loads(proc.stdout)
    return int(body.pop("status")), body


def _restricted(lab: Hardened) -> tuple[set[str], set[str]]:
    """The restricted documents' ids and canaries, from the corpus beside the spec."""
    import yaml

    manifest = yaml.safe_load((lab.spec_path.parent / "corpus" / "manifest.yaml").read_text())
    docs = [d for d in manifest["documents"] if "secops" in d["groups"]]
    return {d["id"] for d in docs}, {d["canary"] for d in docs if d["canary"]}


def _audit(lab: Hardened, request_id: str) -> list[dict[str, Any]]:
    log = lab.ssh("rag-01", "sudo journalctl -u mlseclab-rag -o cat --no-pager --since -30min")
    events = [json.loads(x) for x in log.stdout.splitlines() if x.startswith('{"audit"')]
    return [e for e in events if e.get("request_id") == request_id]


def test_rag_answers_a_secops_client_citing_restricted_documents(lab: Hardened) -> None:
    status, body = _rag(lab, "operator", RESTRICTED_QUESTION)
    assert status == 200, body
    cited = {c["document"] for c in body["citations"]}
    assert "incident-2025-03" in cited, cited
    assert body["answer"] and body["timings"]["generation_ms"] > 0
    [event] = _audit(lab, body["request_id"])
    assert event["client"] == "operator" and "restricted" in event["collections"]


def test_rag_never_gives_an_everyone_client_a_restricted_document(lab: Hardened) -> None:
    restricted, canaries = _restricted(lab)
    status, body = _rag(lab, "rag-app", RESTRICTED_QUESTION)
    assert status in (200, 451), body
    text = json.dumps(body)
    assert not {c["document"] for c in body.get("citations", [])} & restricted
    assert not any(token in text for token in canaries)
    request_id = body.get("request_id") or body["error"]["request_id"]
    [event] = _audit(lab, request_id)
    assert event["client"] == "rag-app" and event["groups"] == ["everyone"]
    assert not set(event["documents"]) & restricted
    assert "restricted" not in event["collections"]


def test_rag_blocks_a_public_note_that_leaks_a_restricted_canary(lab: Hardened) -> None:
    status, body = _rag(lab, "rag-app", "What is the incident reference in the meeting notes?")
    assert status == 451, body
    assert body["error"]["type"] == "canary_blocked"
    [event] = _audit(lab, body["error"]["request_id"])
    assert event["audit"] == "rag.canary_blocked"
    status, body = _rag(lab, "operator", "What is the incident reference in the meeting notes?")
    assert status == 200, body  # secops may read the incident report


def test_rag_quarantined_the_injected_document_and_reingest_adds_nothing(lab: Hardened) -> None:
    proc = lab.cli("rag", "ingest", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["indexed"] == [] and report["removed"] == [] and report["refused"] == []
    assert len(report["unchanged"]) == report["documents"] == 24
    status = json.loads(lab.cli("rag", "status", "--json").stdout)
    assert status["units"]["mlseclab-rag.service"]["active"] == "active"
    assert status["last_ingest"]["unchanged"] == report["unchanged"]
    # as postgres itself: FORCE ROW LEVEL SECURITY hides every row from the owner role too
    count = _psql_as_owner(
        lab,
        "RESET ROLE; SELECT status || ':' || "
        "(SELECT count(*) FROM rag.chunks WHERE document = s.id)"
        " FROM rag.sources s WHERE id = 'vendor-integration-notes';",
    )
    assert count.stdout.split()[-1] == "quarantined:0", count.stdout + count.stderr


_BYPASS = """
import ssl, sys, urllib.error, urllib.request
url, tls, cert = sys.argv[1], "/etc/nginx/mlseclab/tls", sys.argv[2] == "cert"
ctx = ssl.create_default_context(cafile=tls + "/ca.crt")
if cert:
    ctx.load_cert_chain(tls + "/server.crt", tls + "/server.key")
req = urllib.request.Request(url, data=b'{"question": "restricted?"}', method="POST",
    headers={"Content-Type": "application/json",
             "X-Mlseclab-Principal": "operator|everyone,secops|1|00"})
try:
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, "reason", e)
    print("refused" if not isinstance(reason, ssl.SSLCertVerificationError) else "badcert", reason)
"""


def _post_from_gateway(lab: Hardened, url: str, *, with_certificate: bool) -> str:
    proc = subprocess.run(
        [
            "ssh",
            "-F",
            str(lab.ssh_config),
            "gateway-01",
            f"sudo python3 - {url} {'cert' if with_certificate else 'nocert'}",
        ],
        input=_BYPASS,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return (proc.stdout.strip().splitlines() or [f"no output: {proc.stderr[-500:]}"])[-1]


def test_rag_refuses_a_request_that_bypasses_the_gateway(lab: Hardened) -> None:
    app = lab.topo.nodes["rag-01"].interface_on("app").ip  # type: ignore[union-attr]
    url = f"https://{app}:8080/v1/rag/query"
    # from the gateway itself (the only node the router lets through), with the node's own
    # Python: the image has no curl
    without = _post_from_gateway(lab, url, with_certificate=False)
    assert without.startswith("refused"), without  # the TLS handshake fails: no HTTP at all
    forged = _post_from_gateway(lab, url, with_certificate=True)
    assert forged == "403", forged  # the gateway's certificate, a principal it did not sign
    # from the operator's host the router drops it: only the gateway may connect
    with pytest.raises(OSError):
        socket.create_connection((str(app), 8080), timeout=5).close()


def test_embeddings_are_refused_for_a_client_without_the_right(lab: Hardened) -> None:
    status, body = lab.gateway(
        "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ["x"]}, key="rag-app"
    )
    assert status == 403, body


def _summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def test_second_harden_changes_nothing(lab: Hardened) -> None:
    summary = _summary(lab.cli("harden", "--json"))
    assert {h: s["changed"] for h, s in summary["hosts"].items()} == dict.fromkeys(
        lab.topo.nodes, 0
    )
    assert not summary["failed"]


def _psql_as_owner(lab: Hardened, sql: str) -> subprocess.CompletedProcess[str]:
    """SQL on vectordb-01 over the local socket as postgres, acting as the table's owner role
    (it cannot log in); the statements go on stdin, so nothing needs quoting."""
    return subprocess.run(
        [
            "ssh",
            "-F",
            str(lab.ssh_config),
            "vectordb-01",
            "sudo -u postgres psql -d rag -At -v ON_ERROR_STOP=1",
        ],
        input=f"SET ROLE rag_owner;\n{sql}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rebuild_keeps_the_vector_rows_and_the_model_files(lab: Hardened) -> None:
    count = "SELECT count(*) FROM rag.documents WHERE tenant = 'rebuild-probe';"
    insert = _psql_as_owner(
        lab,
        "INSERT INTO rag.documents (tenant, content, embedding) "
        "SELECT 'rebuild-probe', 'row ' || g, array_fill(g::real / 1000, ARRAY[384])::vector "
        f"FROM generate_series(1, 250) AS g;\n{count}",
    )
    assert insert.returncode == 0, insert.stderr
    rows = int(insert.stdout.split()[-1])
    assert rows == 250
    models = lab.names.dataset_dir("models")
    pinned = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in models.glob("*.gguf")}
    assert len(pinned) == 2
    machine_id = lab.ssh("vectordb-01", "cat /etc/machine-id").stdout
    assert lab.ssh("vectordb-01", "sudo touch /root/rebuild-marker").returncode == 0

    rebuild = lab.cli("rebuild", "vectordb-01")  # with hardening
    assert rebuild.returncode == 0, rebuild.stderr[-3000:]

    assert lab.ssh("vectordb-01", "sudo test -e /root/rebuild-marker").returncode == 1
    assert lab.ssh("vectordb-01", "cat /etc/machine-id").stdout == machine_id
    after = _psql_as_owner(lab, count)
    assert after.returncode == 0, after.stderr
    assert int(after.stdout.split()[-1]) == rows
    assert _psql_as_rag(lab, "SELECT count(*) FROM rag.documents").returncode == 0  # TLS, SCRAM
    assert {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in models.glob("*.gguf")
    } == pinned
    snaps = json.loads(lab.cli("snapshots", "--json").stdout)["snapshots"]
    assert [(s["dataset"], s["reason"]) for s in snaps] == [("vectors", "rebuild")]
    cleanup = _psql_as_owner(lab, "DELETE FROM rag.documents WHERE tenant = 'rebuild-probe';")
    assert cleanup.returncode == 0, cleanup.stderr


# Posture, tamper and drift proofs share this module's lab and run after the tests
# above, in this order: drift on the clean lab (check mode reports no change, verify
# passes), each tamper proven and reverted, then drift with many tampers at once and
# --fix (which may rebuild nodes).
from e2e import posture_proofs as _proofs  # noqa: E402

test_drift_on_the_hardened_lab_finds_nothing_and_verify_passes = (
    _proofs.test_drift_on_the_hardened_lab_finds_nothing_and_verify_passes
)
test_every_tamper_makes_its_checks_fail_and_reverts = (
    _proofs.test_every_tamper_makes_its_checks_fail_and_reverts
)
test_drift_names_every_tamper_and_fix_clears_them = (
    _proofs.test_drift_names_every_tamper_and_fix_clears_them
)


# `mlseclab attack` runs last, on the lab that drift --fix has just put back: every
# scenario must still be blocked there.
def _attack(lab: Hardened, *scenarios: str, detect_timeout: int = 0) -> tuple[int, dict[str, Any]]:
    proc = lab.cli("attack", *scenarios, "--json", "--detect-timeout", str(detect_timeout))
    assert proc.returncode in (0, 2), proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


_ACTIVE_ALERTS = (
    'python3 -c \'import json,urllib.request; print(json.dumps([a["labels"] for a in '
    'json.load(urllib.request.urlopen("http://{address}:9093/api/v2/alerts?active=true"))]))\''
)
# how long Prometheus has scraped (its targets are static, all scraped since it started):
# a new series counts in full only once its target has two minutes of history
# (roles/observability/files/mlseclab-alerts.yml)
_HISTORY = (
    "python3 -c 'import json,urllib.request,urllib.parse; q=urllib.parse.urlencode("
    '{{"query": "time() - process_start_time_seconds{{job=\\"prometheus\\"}}"}}); '
    'r=json.load(urllib.request.urlopen("http://{address}:9090/api/v1/query?"+q)); '
    'print(r["data"]["result"][0]["value"][1] if r["data"]["result"] else 0)\''
)


def _quiet_lab(lab: Hardened, within: float = 400) -> list[dict[str, str]]:
    """Wait until Alertmanager has no active alert (what earlier tests provoked on purpose
    resolves within a few minutes) and every target has 150 s of history (drift --fix may
    have rebuilt the observability node); the alerts still active at the end."""
    address = lab.topo.nodes["obs-01"].mgmt.ip
    deadline = time.time() + within
    while True:
        done = lab.ssh("obs-01", _ACTIVE_ALERTS.format(address=address))
        assert done.returncode == 0, done.stderr[-2000:]
        active = json.loads(done.stdout)
        history = lab.ssh("obs-01", _HISTORY.format(address=address))
        assert history.returncode == 0, history.stderr[-2000:]
        settled = float(history.stdout.strip() or 0) >= 150
        if (not active and settled) or time.time() > deadline:
            return list(active)
        time.sleep(10)


# network, authentication, extraction and integrity: each must raise its alert
DETECTED = (
    "edge-discovery",
    "gateway-unauthenticated",
    "key-guessing",
    "model-extraction",
    "off-allowlist",
    "node-discovery",
    "lateral-movement",
    "exfiltration",
    "rag-poisoning",
    "model-tamper",
)


def test_attack_every_scenario_is_blocked_and_detected(lab: Hardened) -> None:
    """`mlseclab attack`: every scenario, from the edge client, from the RAG service's own
    identity and through the model and corpus supply chains, is blocked on the hardened lab
    and raises its alert on the observability node (none firing before: a quiet lab); the
    edge client is gone afterwards and the lab still serves."""
    still = _quiet_lab(lab)
    assert not still, f"alerts active on a lab nobody attacks: {still}"
    code, report = _attack(lab, detect_timeout=180)
    verdicts = {s["id"]: (s["verdict"], s["evidence"], s["error"]) for s in report["scenarios"]}
    assert code == 0 and report["summary"]["missed"] == 0, verdicts
    assert len(report["scenarios"]) == 11
    assert not report["alert_errors"] and not report["alerts_before"], report["alert_errors"]
    undetected = [s["id"] for s in report["scenarios"] if s["id"] in DETECTED and not s["detected"]]
    assert not undetected, (undetected, report["alerts_seen"])
    by_id = {s["id"]: s for s in report["scenarios"]}
    edge = by_id["edge-discovery"]["evidence"]
    assert "gateway-01 10.78.20.11:443 (clients-to-gateway)" in edge[1], edge
    assert "HTTP {" in by_id["model-extraction"]["evidence"][0]
    assert "429" in by_id["model-extraction"]["evidence"][0]
    assert "quarantined at ingest" in by_id["rag-poisoning"]["evidence"][0]
    assert "serving again" in by_id["model-tamper"]["evidence"][-1]
    assert Path(report["report_dir"], "attack.html").is_file()
    assert not [ns for ns in _netns() if ns == "mlsl-hard-client"]
    status, _ = lab.gateway("/v1/models")
    assert status == 200


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def test_attack_reports_a_miss_when_the_rag_service_can_sign_principals(lab: Hardened) -> None:
    """The scenario can fail: hand the RAG service the signing key again (a drop-in), and
    vector-store-abuse reads restricted rows under a principal it signed itself."""
    key = (lab.secrets / "rag-signing-key").read_text(encoding="utf-8")
    cred = "/etc/mlseclab/rag/credentials/signing-key"
    dropin = "/etc/systemd/system/mlseclab-rag.service.d/zz-attack-test.conf"
    put = subprocess.run(
        [
            "ssh",
            "-F",
            str(lab.ssh_config),
            "rag-01",
            f"sudo sh -c 'umask 077; cat > {cred}' && sudo mkdir -p {Path(dropin).parent} && "
            f"printf '[Service]\\nLoadCredential=signing-key:{cred}\\n' | sudo tee {dropin} "
            ">/dev/null && sudo systemctl daemon-reload",
        ],
        input=key,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        assert put.returncode == 0, put.stderr
        code, report = _attack(lab, "vector-store-abuse")
        [s] = report["scenarios"]
        assert code == 2 and s["verdict"] == "missed", s
        assert any("ALLOWED: a principal signed" in e for e in s["evidence"]), s["evidence"]
    finally:
        lab.ssh("rag-01", f"sudo rm -f {cred} {dropin} && sudo systemctl daemon-reload")
    code, report = _attack(lab, "vector-store-abuse")
    assert code == 0, report["scenarios"]


def test_evidence_collects_and_verifies(lab: Hardened, tmp_path: Path) -> None:
    """`mlseclab evidence`: one 0600 archive that `evidence verify` finds intact, holding
    each node's journal and listeners and the model files' sha256, equal to their pins; a
    copy with one byte of one member flipped is named by `evidence verify` (exit 2)."""
    proc = lab.cli("evidence", "--since", "1h", "--json", "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(proc.stdout)
    archive = Path(meta["archive"])
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert meta["summary"]["error"] == 0 and not meta["summary"]["nodes_not_answering"]
    check = lab.cli("evidence", "verify", str(archive))
    assert check.returncode == 0, check.stderr
    assert "intact" in check.stderr

    top = archive.name.removesuffix(".tar.gz")
    with tarfile.open(archive) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}  # type: ignore[union-attr]
    for node in lab.spec.nodes:
        journal = members[f"{top}/nodes/{node}/journal.jsonl"].splitlines()
        assert journal and "MESSAGE" in json.loads(journal[-1]), node
        listeners = members[f"{top}/nodes/{node}/listeners.txt"].decode()
        assert "LISTEN" in listeners and "sshd" in listeners, (node, listeners)
    models = json.loads(members[f"{top}/host/models.json"])
    assert {m["model"]: m["found"] for m in models} == {
        name: m.sha256 for name, m in lab.spec.models.items()
    }
    assert all(m["matches"] for m in models)

    victim = f"{top}/nodes/rag-01/listeners.txt"
    bad = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(bad, "w:gz") as out:
        for m in src:
            data = src.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == victim:
                data = bytes([data[0] ^ 0x01]) + data[1:]
            out.addfile(m, io.BytesIO(data))
    check = lab.cli("evidence", "verify", str(bad))
    assert check.returncode == 2, check.stderr
    assert "changed: nodes/rag-01/listeners.txt" in check.stderr
    assert "NOT intact (1 changed)" in check.stderr
