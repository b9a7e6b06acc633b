"""The RAG node: its service account, its credentials, its sandboxed units, its peers,
and the service's defences seen from outside: only the gateway gets in (mutual TLS and a
signed principal), answers stay within the caller's groups, canaries never leave for a
caller who may not read their document, injected documents are quarantined.

The credentials are compared with the operator's copies by sha256 only: the
node reports the hash of each file's content, the check hashes the operator's
secret, and neither secret is ever in a message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from service_state import (
    account_findings,
    corpus_entries,
    file_states,
    mode_findings,
    other_host,
    run_python,
    sandbox_findings,
    secrets,
)

from mlseclab.posture.plugin import PostureLab, PostureNode, not_applicable

pytestmark = pytest.mark.roles("rag")

UNIT = "mlseclab-rag.service"
INGEST_UNIT = "mlseclab-rag-ingest.service"
USER = "rag"
CONFIG_DIR = "/etc/mlseclab/rag"
CREDENTIALS_DIR = f"{CONFIG_DIR}/credentials"
STATE_DIR = "/var/lib/mlseclab-rag"
# credential file -> the operator's secret it must be ("node-key": the node's TLS key)
CREDENTIALS = {
    "db-query-password": "db-query-password",
    "db-ingest-password": "db-ingest-password",
    "inference-api-key": "inference-api-key",
    "tls-key": "node-key",
}
# the owner's credential bypasses row-level security; with the principal signing key, a
# compromised service could sign any principal (the database alone verifies them)
NOT_HERE = ("db-owner-password", "rag-signing-key")
# what each unit loads: credential name -> file. The query service never holds the
# ingest (write) password; the ingest job never holds the signing or TLS key.
UNIT_CREDENTIALS = {
    UNIT: {
        "db-password": "db-query-password",
        "inference-api-key": "inference-api-key",
        "tls-key": "tls-key",
    },
    INGEST_UNIT: {"db-password": "db-ingest-password", "inference-api-key": "inference-api-key"},
}


@pytest.mark.control("MLSL-RAG-01", cis="5.4.2.7")
def test_rag_service_account(node: PostureNode, host: Any) -> None:
    """The RAG service runs as a system account that cannot log in, with a private state dir."""
    wrong = account_findings(host, USER)
    user = host.check_output("systemctl show %s -p User --value", UNIT).strip()
    if user != USER:
        wrong.append(f"{UNIT} runs as {user or 'root'}, expected {USER}")
    wrong += mode_findings(file_states(host, [STATE_DIR])[STATE_DIR], mode=0o700, owner=USER)
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# The credential directory's files with owner, mode and the sha256 of their stripped content.
_CREDENTIALS_PROBE = r"""
import grp, hashlib, json, os, pwd, stat, sys
d = json.loads(sys.argv[1])
out = {}
for name in sorted(os.listdir(d)):
    p = os.path.join(d, name)
    st = os.lstat(p)
    with open(p, "rb") as f:
        digest = hashlib.sha256(f.read().strip()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
    out[name] = {"mode": stat.S_IMODE(st.st_mode), "owner": pwd.getpwuid(st.st_uid).pw_name,
                 "group": grp.getgrgid(st.st_gid).gr_name, "sha256": digest}
print(json.dumps(out))
"""


def _secret_sha256(lab: PostureLab, name: str, node: str = "rag-01") -> str:
    path = secrets(lab).node_key(node) if name == "node-key" else secrets(lab).service(name)
    assert path.is_file(), f"{path} is missing on the operator's host"
    return hashlib.sha256(path.read_bytes().strip()).hexdigest()


@pytest.mark.control("MLSL-RAG-02", owasp="LLM08", atlas="AML.T0055, AML.T0082")
def test_rag_credentials_root_only(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The RAG node holds its DB passwords (query, ingest), the inference key and its TLS
    key, each 0600 root, and never the owner's password or the principal signing key."""
    got = run_python(host, _CREDENTIALS_PROBE, CREDENTIALS_DIR)
    wrong = mode_findings(
        file_states(host, [CREDENTIALS_DIR])[CREDENTIALS_DIR], mode=0o700, owner="root"
    )
    if sorted(got) != sorted(CREDENTIALS):
        wrong.append(f"{CREDENTIALS_DIR} holds {sorted(got)}, expected {sorted(CREDENTIALS)}")
    forbidden = {_secret_sha256(lab, s): s for s in NOT_HERE}
    for name, f in sorted(got.items()):
        path = f"{CREDENTIALS_DIR}/{name}"
        if f["mode"] & ~0o600 or (f["owner"], f["group"]) != ("root", "root"):
            wrong.append(
                f"{path} is {f['mode']:04o} {f['owner']}:{f['group']}, expected 0600 root:root"
            )
        if f["sha256"] in forbidden:
            wrong.append(f"{path} is the {forbidden[f['sha256']]}, which must not be on this node")
        elif name in CREDENTIALS and f["sha256"] != _secret_sha256(
            lab, CREDENTIALS[name], node.name
        ):
            wrong.append(f"{path} is not the lab's {CREDENTIALS[name]}")
    # the service account itself cannot read them: systemd hands them over (LoadCredential)
    readable = host.run(
        'for f in %s/*; do runuser -u %s -- test -r "$f" && echo "$f"; done', CREDENTIALS_DIR, USER
    ).stdout.split()
    wrong += [f"{USER} can read {f}" for f in readable]
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _load_credentials(host: Any, unit: str = UNIT) -> dict[str, str]:
    """The unit's LoadCredential= pairs (systemctl show prints them as [unprintable])."""
    path = "/org/freedesktop/systemd1/unit/" + unit.replace("-", "_2d").replace(".", "_2e")
    out = host.check_output(
        "busctl --json=short get-property org.freedesktop.systemd1 %s "
        "org.freedesktop.systemd1.Service LoadCredential",
        path,
    )
    return {name: src for name, src in json.loads(out)["data"]}


@pytest.mark.control("MLSL-RAG-04", atlas="AML.T0055")
def test_rag_unit_sandboxed(node: PostureNode, host: Any) -> None:
    """The RAG units are sandboxed and get their credentials from systemd, not from files they
    own: the query service the read-only password, the ingest job the write password."""
    wrong, _ = sandbox_findings(host, UNIT, user=USER)
    wrong += sandbox_findings(host, INGEST_UNIT, user=USER)[0]
    for unit, wanted in UNIT_CREDENTIALS.items():
        creds = _load_credentials(host, unit)
        expected = {name: f"{CREDENTIALS_DIR}/{src}" for name, src in wanted.items()}
        if creds != expected:
            wrong.append(f"{unit}: LoadCredential {creds}, expected {expected}")
        env = host.check_output("systemctl show %s -p Environment,EnvironmentFiles", unit)
        if any(word in env.lower() for word in ("password", "key", "secret", "token")):
            wrong.append(f"{unit} passes a credential-looking environment: {env.strip()[:200]}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-RAG-03", owasp="LLM08")
def test_rag_peers_verified_with_lab_ca(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The RAG service verifies the vector DB against the lab CA (verify-full) as rag_query."""
    settings = json.loads(host.check_output("cat %s/settings.json", CONFIG_DIR))
    vdb = settings.get("vectordb", {})
    wrong = []
    if vdb.get("sslmode") != "verify-full":
        wrong.append(f"vectordb sslmode {vdb.get('sslmode')!r}, expected 'verify-full'")
    vectordb = [n for n in lab.nodes() if n.role == "vectordb"]
    if vectordb and vdb.get("host") != vectordb[0].topo.service[0].ip:
        wrong.append(
            f"vectordb host {vdb.get('host')!r}, expected {vectordb[0].topo.service[0].ip}"
        )
    if vdb.get("user") != "rag_query":
        wrong.append(f"vectordb user {vdb.get('user')!r}, expected the read-only rag_query")
    ca_here = host.check_output("sha256sum %s/ca.crt", CONFIG_DIR).split()[0]
    if ca_here != hashlib.sha256(secrets(lab).ca_cert.read_bytes()).hexdigest():
        wrong.append(f"{CONFIG_DIR}/ca.crt is not the lab CA")
    wrong += mode_findings(
        file_states(host, [f"{CONFIG_DIR}/ca.crt"])[f"{CONFIG_DIR}/ca.crt"],
        mode=0o644,
        owner="root",
    )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# --- the service's defences, observed from outside ---------------------------------------------

QUERY_PATH = "/v1/rag/query"
PRINCIPAL_HEADER = "X-Mlseclab-Principal"


def _settings(host: Any) -> dict[str, Any]:
    return dict(json.loads(host.check_output("cat %s/settings.json", CONFIG_DIR)))


# One POST to the RAG service straight from a node, bypassing the gateway: with the given
# client certificate (or none) and principal header (or none). Prints the HTTP status
# line, or how the connection ended without one.
_BYPASS_PROBE = r"""
import json, socket, ssl, sys
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile=a["ca"])
ctx.check_hostname = False
if a.get("cert"):
    ctx.load_cert_chain(a["cert"], a["key"])
body = b'{"question": "what is restricted?"}'
head = "POST /v1/rag/query HTTP/1.1\r\nHost: rag\r\nContent-Type: application/json\r\n"
head += "Content-Length: %d\r\nConnection: close\r\n" % len(body)
if a.get("principal"):
    head += "X-Mlseclab-Principal: %s\r\n" % a["principal"]
try:
    with socket.create_connection((a["host"], a["port"]), timeout=15) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(head.encode() + b"\r\n" + body)
            line = s.recv(256).split(b"\r\n")[0].decode(errors="replace")
            print(json.dumps(line or "closed without a response"))
except (ssl.SSLError, OSError) as exc:
    print(json.dumps("refused: %s" % exc.__class__.__name__))
"""


def _signed(lab: PostureLab, client: str, groups: list[str], issued: int) -> str:
    key = secrets(lab).service("rag-signing-key").read_text(encoding="utf-8").strip()
    payload = f"{client}|{','.join(groups)}|{issued}"
    return payload + "|" + hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


@pytest.mark.control("MLSL-RAG-06", owasp="LLM08", atlas="AML.T0049, AML.T0012, AML.M0019")
def test_rag_refuses_requests_that_bypass_the_gateway(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """The service answers only the gateway: no client certificate, or another node's lab
    certificate, ends the connection before HTTP; the gateway's own certificate without a
    valid, fresh, signed principal gets 403."""
    listen = _settings(host)["listen"]
    target = {"host": listen["host"], "port": listen["port"]}
    wrong = []
    here = {"ca": f"{CONFIG_DIR}/ca.crt", **target}
    for label, probe in (
        ("without a client certificate", here),
        (
            f"with {node.name}'s own lab certificate",
            {**here, "cert": f"{CONFIG_DIR}/server.crt", "key": f"{CREDENTIALS_DIR}/tls-key"},
        ),
    ):
        got = run_python(host, _BYPASS_PROBE, probe)
        if got.startswith("HTTP/"):
            wrong.append(f"a request {label} got {got!r}, expected no HTTP response at all")
    gateways = [n for n in lab.nodes() if n.role == "gateway"]
    if gateways:
        gw = other_host(lab, gateways[0].name)
        tls = "/etc/nginx/mlseclab/tls"
        cert = {"ca": f"{tls}/ca.crt", "cert": f"{tls}/server.crt", "key": f"{tls}/server.key"}
        now = int(time.time())
        forged = _signed(lab, "posture", ["everyone"], now).replace(
            "|everyone|", "|everyone,secops|"
        )
        for label, principal in (
            ("no principal", None),
            ("a forged principal", forged),
            ("a stale principal", _signed(lab, "posture", ["secops"], now - 3600)),
        ):
            got = run_python(gw, _BYPASS_PROBE, {**target, **cert, "principal": principal})
            if not got.startswith("HTTP/1.1 403"):
                wrong.append(f"the gateway's certificate with {label} got {got!r}, expected 403")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _ask(
    lab: PostureLab, client: str, question: str, *, generate: bool = True
) -> tuple[int, dict[str, Any]]:
    """POST a question to the gateway from the operator's host as ``client`` (``generate``
    False: retrieval and its filters only, no answer)."""
    gateway = next(n for n in lab.nodes() if n.role == "gateway")
    key = secrets(lab).client_key(client).read_text(encoding="utf-8").strip()
    req = urllib.request.Request(
        f"https://{gateway.topo.service[0].ip}{QUERY_PATH}",
        data=json.dumps({"question": question, "generate": generate}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    ctx = ssl.create_default_context(cafile=str(secrets(lab).ca_cert))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=300) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _clients_without(lab: PostureLab, groups: tuple[str, ...]) -> list[str]:
    return sorted(c for c, d in lab.spec.clients.items() if not set(d.groups) & set(groups))


@pytest.mark.control("MLSL-RAG-08", owasp="LLM02, LLM08", atlas="AML.T0057, AML.T0024")
def test_rag_canary_never_reaches_a_caller_outside_its_groups(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """A question that retrieves a document carrying a restricted document's canary is
    answered 451 (blocked, logged) for a client outside that document's groups."""
    corpus, entries = corpus_entries(lab)
    planted = {e.canary: e.groups for e in entries if e.canary}
    leaks = [
        (e, token)
        for e in entries
        for token, groups in planted.items()
        if e.canary != token
        and not set(e.groups) & set(groups)
        and token in (corpus / e.path).read_text(encoding="utf-8")
    ]
    if not leaks:
        not_applicable("the corpus has no document quoting another's canary to ask about")
    entry, token = leaks[0]
    outsiders = _clients_without(lab, planted[token])
    if not outsiders:
        not_applicable(f"every client may read the document that carries {token[:10]}...")
    question = " ".join((corpus / entry.path).read_text(encoding="utf-8").split())[:300]
    status, body = _ask(lab, outsiders[0], question)
    wrong = []
    if status != 451 or body.get("error", {}).get("type") != "canary_blocked":
        wrong.append(
            f"{outsiders[0]} asking about {entry.id} got {status} "
            f"({str(body.get('error') or 'an answer')[:120]}), expected 451 canary_blocked"
        )
    if token in json.dumps(body):
        wrong.append(f"the response to {outsiders[0]} carries the canary of a restricted document")
    log = host.run("journalctl -u %s --since -10min -o cat --no-pager", UNIT).stdout
    if status == 451 and '"audit": "rag.canary_blocked"' not in log:
        wrong.append("no rag.canary_blocked audit event in the service's journal")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-RAG-09", owasp="LLM08, LLM02", atlas="AML.T0036, AML.T0057, AML.M0019")
def test_rag_answers_cite_only_the_callers_groups(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """The same question about a restricted document: a client of its groups gets it cited;
    a client outside them gets no restricted citation, no canary, and the audit log agrees."""
    corpus, entries = corpus_entries(lab)
    restricted = [e for e in entries if e.canary and _clients_without(lab, e.groups)]
    insiders = [
        c
        for c, d in sorted(lab.spec.clients.items())
        if restricted and set(d.groups) & set(restricted[0].groups)
    ]
    if not restricted or not insiders:
        not_applicable("no restricted document with clients both inside and outside its groups")
    doc = restricted[0]
    outsider = _clients_without(lab, doc.groups)[0]
    text = (corpus / doc.path).read_text(encoding="utf-8").replace(doc.canary or "", "")
    question = " ".join(text.split())[:300]
    wrong = []
    # retrieval only: who may see what is decided there; the e2e suite asks for answers
    status, body = _ask(lab, insiders[0], question, generate=False)
    cited = [c["document"] for c in body.get("citations", [])]
    if status != 200 or doc.id not in cited:
        wrong.append(f"{insiders[0]} (may read {doc.id}) got {status}, citations {cited}")
    status, body = _ask(lab, outsider, question, generate=False)
    foreign = {e.id for e in entries if not set(e.groups) & set(lab.spec.clients[outsider].groups)}
    leaked = sorted({c["document"] for c in body.get("citations", [])} & foreign)
    if status not in (200, 451) or leaked:
        wrong.append(f"{outsider} got {status}, citing documents it may not read: {leaked}")
    if any(e.canary and e.canary in json.dumps(body) for e in entries if e.id in foreign):
        wrong.append(f"the answer to {outsider} carries a canary of a document it may not read")
    request_id = body.get("request_id") or body.get("error", {}).get("request_id", "")
    log = host.run("journalctl -u %s --since -10min -o cat --no-pager", UNIT).stdout
    events = [json.loads(line) for line in log.splitlines() if line.startswith('{"audit"')]
    mine = [e for e in events if e.get("request_id") == request_id]
    if not mine:
        wrong.append(f"no audit event for {outsider}'s request {request_id}")
    for e in mine:
        if set(e.get("documents", [])) & foreign or e.get("client") != outsider:
            wrong.append(f"audit event {e} shows documents {outsider} may not read")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
