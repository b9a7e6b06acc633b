"""The inference gateway (nginx), seen by a client and read from nginx's own configuration.

The live half of each check talks HTTPS to the gateway's edge address from the
operator's host, the way an API client does (the flow clients-to-gateway
allows it from anywhere), and verifies the certificate against the lab CA in
``.mlseclab/<lab>/secrets/ca.crt``. The persisted half reads ``nginx -T`` on
the node: the configuration nginx itself loads, not the role's template.

What the gateway is meant to be comes from the spec (addresses, names), the
lab's secrets (client keys and their rates) and the gateway role's defaults
(the endpoint allowlist and the body size limit), so a changed default and a
drifted node are both seen.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import socket
import ssl
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nginx_config
import pytest
import yaml
from service_state import file_states, mode_findings, secrets, service_address

from mlseclab.posture.plugin import PostureLab, PostureNode

pytestmark = pytest.mark.roles("gateway")

GATEWAY_DEFAULTS = (
    Path(__file__).resolve().parents[2] / "roles" / "gateway" / "defaults" / "main.yml"
)
HTTPS_PORT = 443
ACCESS_LOG = "/var/log/nginx/access.json"
TLS_DIR = "/etc/nginx/mlseclab/tls"
HSTS_MIN_AGE = 31536000  # one year
# what the model server answers without a key and the gateway must never pass on
OFF_LIST = ("/", "/docs", "/openapi.json", "/redoc", "/extras/tokenize", "/v1/models/", "/v1/x")
WEAK_CIPHER_WORDS = ("NULL", "EXPORT", "RC4", "DES", "MD5", "@SECLEVEL=0", "@SECLEVEL=1")


def _role_default(name: str) -> Any:
    return yaml.safe_load(GATEWAY_DEFAULTS.read_text(encoding="utf-8"))[name]


# --- the client side --------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an address, verifying the certificate for the gateway's DNS name."""

    def __init__(self, address: str, server_name: str, context: ssl.SSLContext) -> None:
        super().__init__(address, HTTPS_PORT, context=context, timeout=15)
        self.server_name = server_name
        self.tls_context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.server_name)


def _server_name(node: PostureNode, lab: PostureLab) -> str:
    return f"{node.name}.{lab.spec.lab.domain}"


def _context(lab: PostureLab) -> ssl.SSLContext:
    ca = secrets(lab).ca_cert
    assert ca.is_file(), f"the lab CA {ca} is missing on the operator's host"
    return ssl.create_default_context(cafile=str(ca))


def _connect(node: PostureNode, lab: PostureLab) -> _Connection:
    return _Connection(service_address(node), _server_name(node, lab), _context(lab))


def _send(
    conn: _Connection,
    method: str,
    path: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Response:
    sent = {"Host": conn.server_name, **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=body, headers=sent)
    r = conn.getresponse()
    return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())


def _client_key(lab: PostureLab, client: str) -> str:
    path = secrets(lab).client_key(client)
    assert path.is_file(), f"client key {path} is missing on the operator's host"
    return path.read_text(encoding="utf-8").strip()


def _clients(lab: PostureLab) -> dict[str, int]:
    """Gateway client name -> requests a minute, from the lab's hashed client list."""
    path = secrets(lab).client_hashes
    assert path.is_file(), f"{path} is missing on the operator's host"
    data = json.loads(path.read_text(encoding="utf-8"))
    return {name: int(v["rate_per_minute"]) for name, v in data.items()}


def _operator_client(lab: PostureLab) -> str:
    clients = _clients(lab)
    return "operator" if "operator" in clients else sorted(clients)[0]


def _handshake(node: PostureNode, lab: PostureLab, version: ssl.TLSVersion) -> str:
    """Offer exactly one TLS version: the negotiated version, or why the server refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the chain is test_gateway_certificate_from_lab_ca's job
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer old versions at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    try:
        with (
            socket.create_connection((service_address(node), HTTPS_PORT), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=_server_name(node, lab)) as tls,
        ):
            return str(tls.version())
    except ssl.SSLError as exc:
        # a server alert means the version was offered and refused; anything else is a client
        # that could not offer it, which proves nothing
        if "ALERT" in (exc.reason or "").upper():
            return "refused"
        return f"not tested ({exc.reason or exc})"


# --- the checks -------------------------------------------------------------------------------


@pytest.mark.control("MLSL-GW-01", owasp="LLM02", atlas="AML.T0049")
def test_gateway_tls_only(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """nginx serves only TLS 1.2 and 1.3, with strong ciphers, on the edge address."""
    results = {
        v.name: _handshake(node, lab, v)
        for v in (
            ssl.TLSVersion.TLSv1,
            ssl.TLSVersion.TLSv1_1,
            ssl.TLSVersion.TLSv1_2,
            ssl.TLSVersion.TLSv1_3,
        )
    }
    wrong = [
        f"{v} handshake: {results[v]}, expected refused"
        for v in ("TLSv1", "TLSv1_1")
        if results[v] != "refused"
    ]
    wrong += [
        f"{v} handshake: {results[v]}, expected {want}"
        for v, want in (("TLSv1_2", "TLSv1.2"), ("TLSv1_3", "TLSv1.3"))
        if results[v] != want
    ]
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -T fails on {node.name}: {conf.error}"
    edge = service_address(node)
    for _, d in conf.find("ssl_protocols"):
        if sorted(d.args) != ["TLSv1.2", "TLSv1.3"]:
            wrong.append(f"{d.file}: `{d}`, expected `ssl_protocols TLSv1.2 TLSv1.3`")
    if not conf.find("ssl_protocols"):
        wrong.append("no ssl_protocols directive (nginx's default admits older versions)")
    for _, d in conf.find("ssl_ciphers"):
        parts = ":".join(d.args).split(":")
        weak = [
            p for p in parts if p[:1] not in "!-" and any(w in p.upper() for w in WEAK_CIPHER_WORDS)
        ]
        if weak:
            wrong.append(f"{d.file}: ssl_ciphers admits {weak}")
    for ctx, d in conf.find("listen"):
        if d.args[:2] != [f"{edge}:{HTTPS_PORT}", "ssl"]:
            wrong.append(
                f"{d.file} ({'/'.join(ctx)}): `{d}`, expected `listen {edge}:{HTTPS_PORT} ssl`"
            )
    assert not wrong, f"{node.name} TLS: " + "; ".join(wrong)


@pytest.mark.control("MLSL-GW-02", owasp="LLM02", atlas="AML.T0055")
def test_gateway_certificate_from_lab_ca(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The gateway's certificate chains to the lab CA and names it; its key is root-only."""
    name = _server_name(node, lab)
    try:
        with (
            socket.create_connection((service_address(node), HTTPS_PORT), timeout=10) as raw,
            _context(lab).wrap_socket(raw, server_hostname=name) as tls,
        ):
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        pytest.fail(
            f"{node.name}: the certificate for {name} does not verify against the lab CA: "
            f"{exc.verify_message}"
        )
    not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), dt.UTC)
    left = not_after - dt.datetime.now(dt.UTC)
    states = file_states(host, [TLS_DIR, f"{TLS_DIR}/server.key"])
    wrong = mode_findings(states[TLS_DIR], mode=0o700, owner="root")
    wrong += mode_findings(states[f"{TLS_DIR}/server.key"], mode=0o600, owner="root", group="root")
    if left < dt.timedelta(days=14):
        wrong.append(f"the certificate expires {not_after:%Y-%m-%d} ({left.days} days)")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-GW-04", atlas="AML.T0006")
def test_gateway_hides_server_version(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """nginx does not tell clients its version (server_tokens off)."""
    conn = _connect(node, lab)
    try:
        r = _send(conn, "GET", "/v1/models")
    finally:
        conn.close()
    server = r.headers.get("server", "")
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -T fails on {node.name}: {conf.error}"
    tokens = [(ctx, d) for ctx, d in conf.find("server_tokens")]
    wrong = []
    if any(ch.isdigit() for ch in server):
        wrong.append(f"the Server header says {server!r}")
    if not any(ctx == ("http",) and d.args == ["off"] for ctx, d in tokens):
        wrong.append("no `server_tokens off` in the http block")
    wrong += [f"{d.file}: `{d}` in {'/'.join(ctx)}" for ctx, d in tokens if d.args != ["off"]]
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-GW-01", owasp="LLM02")
def test_gateway_sends_hsts(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Every gateway response carries HSTS of at least a year, errors included."""
    conn = _connect(node, lab)
    try:
        seen = {
            path: _send(conn, "GET", path).headers.get("strict-transport-security", "")
            for path in ("/v1/models", "/docs")
        }
    finally:
        conn.close()
    wrong = []
    for path, value in seen.items():
        ages = [
            int(p.split("=", 1)[1])
            for p in value.replace(" ", "").split(";")
            if p.startswith("max-age=") and p[8:].isdigit()
        ]
        if not ages or ages[0] < HSTS_MIN_AGE:
            wrong.append(
                f"GET {path} (no key): Strict-Transport-Security {value!r}, "
                f"expected max-age >= {HSTS_MIN_AGE}"
            )
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -T fails on {node.name}: {conf.error}"
    hsts = [
        d
        for _, d in conf.find("add_header")
        if d.args and d.args[0].lower() == "strict-transport-security"
    ]
    if not hsts or any(d.args[-1] != "always" for d in hsts):
        wrong.append(
            f"nginx -T: {[str(d) for d in hsts] or 'no Strict-Transport-Security header'} "
            "(needs `always`)"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-GW-03", owasp="LLM10", atlas="AML.T0040")
def test_gateway_requires_api_key(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Without a valid API key every request gets 401; keys are stored only as sha256 hashes."""
    endpoints = list(_role_default("gateway_allowed_endpoints"))
    bad = {
        "no key": {},
        "a wrong key": {"Authorization": "Bearer " + uuid.uuid4().hex},
        "basic auth": {"Authorization": "Basic bWxzZWNsYWI6bWxzZWNsYWI="},
        "an empty bearer": {"Authorization": "Bearer "},
    }
    conn = _connect(node, lab)
    wrong = []
    try:
        for what, headers in bad.items():
            for path in [*endpoints, "/docs"]:
                r = _send(conn, "GET", path, headers=headers)
                if r.status != 401:
                    wrong.append(f"GET {path} with {what}: {r.status}, expected 401")
        r = _send(
            conn,
            "POST",
            "/v1/chat/completions",
            body=b'{"messages":[]}',
            headers={"Content-Type": "application/json"},
        )
        if r.status != 401:
            wrong.append(f"POST /v1/chat/completions with no key: {r.status}, expected 401")
        # the positive control: a valid key passes the gate (429 is a known, rate-limited key;
        # 502-504 a model server that is away, which is not this check's business)
        r = _send(conn, "GET", "/v1/models", key=_client_key(lab, _operator_client(lab)))
        if r.status not in (200, 429, 502, 503, 504):
            wrong.append(f"GET /v1/models with a valid key: {r.status}, expected 200")
    finally:
        conn.close()
    keys_file = "/etc/nginx/mlseclab/api-keys.json"
    wrong += mode_findings(
        file_states(host, [keys_file])[keys_file], mode=0o600, owner="root", group="root"
    )
    stored = json.loads(host.check_output("cat %s", keys_file) or "{}")
    not_hashes = [
        name
        for digest, name in stored.items()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)
    ]
    if not_hashes:
        wrong.append(f"{keys_file} holds entries that are not sha256 hashes: clients {not_hashes}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-GW-04", owasp="LLM10", atlas="AML.T0040, AML.T0049")
def test_gateway_endpoint_allowlist(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Only the allowlisted model-server endpoints are proxied; all else is 404, with a key too."""
    endpoints = list(_role_default("gateway_allowed_endpoints"))
    key = _client_key(lab, _operator_client(lab))
    conn = _connect(node, lab)
    wrong = []
    try:
        for path in OFF_LIST:
            r = _send(conn, "GET", path, key=key)
            if r.status != 404:
                wrong.append(f"GET {path} with a valid key: {r.status}, expected 404")
        for path in endpoints:
            r = _send(conn, "GET", path, key=key)
            if r.status in (401, 404):
                wrong.append(f"GET {path} (allowlisted) with a valid key: {r.status}")
    finally:
        conn.close()
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -T fails on {node.name}: {conf.error}"
    servers = conf.servers()
    if len(servers) != 1:
        wrong.append(f"nginx -T has {len(servers)} server blocks, expected the gateway's one")
    locations = [d for s in servers for d in s.children("location")]
    exact = sorted(d.args[1] for d in locations if d.args[:1] == ["="])
    other = [d for d in locations if d.args[:1] != ["="]]
    if exact != sorted(endpoints):
        wrong.append(f"exact locations {exact}, expected the allowlist {sorted(endpoints)}")
    for d in other:
        returns = [r.args for r in d.children("return")]
        if d.args != ["/"] or not returns or returns[0][:1] != ["404"] or d.children("proxy_pass"):
            wrong.append(f"`{d}` does not just return 404 (returns {returns})")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-GW-05", owasp="LLM10", atlas="AML.T0029, AML.M0004")
def test_gateway_body_size_and_timeouts(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Request bodies are capped at the deliberate prompt size and slow clients time out."""
    limit = str(_role_default("gateway_client_max_body_size"))
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -T fails on {node.name}: {conf.error}"
    wrong = []
    sizes = conf.find("client_max_body_size")
    if [(ctx, d.args) for ctx, d in sizes] != [(("http",), [limit])]:
        found = [f"{'/'.join(c) or 'main'}: {d}" for c, d in sizes]
        wrong.append(f"client_max_body_size: {found}, expected `{limit}` once, in http")
    for name in (
        "client_body_timeout",
        "client_header_timeout",
        "send_timeout",
        "keepalive_timeout",
    ):
        if not conf.find(name):
            wrong.append(f"no {name} (nginx's default is 60s or more per step)")
    proxied = [
        d for s in conf.servers() for d in s.children("location") if d.children("proxy_pass")
    ]
    wrong += [
        f"`{d}` has no proxy_read_timeout" for d in proxied if not d.children("proxy_read_timeout")
    ]
    # live: a body one byte over the limit is refused before it is read
    over = _bytes(limit) + 1
    conn = _connect(node, lab)
    try:
        conn.putrequest("POST", "/v1/completions", skip_host=True)
        conn.putheader("Host", conn.server_name)
        conn.putheader("Authorization", "Bearer " + _client_key(lab, _operator_client(lab)))
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(over))
        conn.endheaders()
        assert conn.sock is not None
        conn.sock.settimeout(5)  # a gateway without the cap waits for the body
        try:
            status: int | str = conn.getresponse().status
        except TimeoutError:
            status = "no answer: the gateway waited for the body"
    finally:
        conn.close()
    if status != 413:
        wrong.append(f"POST /v1/completions with Content-Length {over}: {status}, expected 413")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _bytes(size: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    s = size.strip().lower()
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


@pytest.mark.control("MLSL-GW-06", atlas="AML.M0024")
def test_gateway_json_access_log(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Each request is logged as one JSON line with the client's name, never its key."""
    marker = f"mlseclab-posture-{uuid.uuid4().hex}"
    client = _operator_client(lab)
    conn = _connect(node, lab)
    try:
        _send(
            conn, "GET", f"/{marker}", key=_client_key(lab, client), headers={"User-Agent": marker}
        )
    finally:
        conn.close()
    wrong = []
    line = ""
    for _ in range(10):  # nginx writes the line when the request ends, unbuffered
        line = host.run("grep -F -- %s %s | tail -n 1", marker, ACCESS_LOG).stdout.strip()
        if line:
            break
    try:
        entry = json.loads(line) if line else None
    except json.JSONDecodeError:
        entry = None
        wrong.append(f"the request's line in {ACCESS_LOG} is not JSON: {line[:200]!r}")
    if line == "":
        wrong.append(f"the request /{marker} is not in {ACCESS_LOG}")
    elif isinstance(entry, dict):
        want = {"client": client, "status": 404, "uri": f"/{marker}"}
        got = {k: entry.get(k) for k in want}
        if got != want:
            wrong.append(f"logged {got}, expected {want}")
        missing = [
            k for k in ("time", "remote_addr", "request_id", "request_time") if k not in entry
        ]
        if missing:
            wrong.append(f"the log line lacks {missing}")
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -T fails on {node.name}: {conf.error}"
    formats = {d.args[0]: d.args[1:] for _, d in conf.find("log_format") if d.args}
    for ctx, d in conf.find("access_log"):
        if d.args == ["off"]:
            continue
        fmt = formats.get(d.args[1]) if len(d.args) > 1 else None
        if fmt is None or "escape=json" not in fmt:
            wrong.append(f"{'/'.join(ctx)}: `{d}` does not log JSON")
        elif any("$http_authorization" in part for part in fmt):
            wrong.append(f"log format {d.args[1]} writes the Authorization header")
    if not conf.find("access_log"):
        wrong.append("no access_log directive")
    wrong += mode_findings(
        file_states(host, [ACCESS_LOG])[ACCESS_LOG], mode=0o640, owner="www-data", group="adm"
    )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-GW-04", atlas="AML.T0055")
def test_gateway_config_single_private_file(node: PostureNode, host: Any) -> None:
    """nginx loads only the role's configuration, it is valid, and root alone can read it."""
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -t fails on {node.name}: {conf.error}"
    allowed = (
        "/etc/nginx/nginx.conf",
        "/etc/nginx/mime.types",
        "/etc/nginx/modules-enabled/",
        "/usr/share/nginx/modules-available/",
    )
    wrong = [f"nginx also loads {f}" for f in conf.files if not f.startswith(allowed)]
    states = file_states(host, ["/etc/nginx/nginx.conf", "/etc/nginx/sites-enabled/default"])
    # nginx.conf holds the upstream inference key
    wrong += mode_findings(states["/etc/nginx/nginx.conf"], mode=0o600, owner="root", group="root")
    if states["/etc/nginx/sites-enabled/default"].exists:
        wrong.append("the distribution's default site is enabled")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# Last in the file: the burst leaves its client rate-limited for a few seconds.
@pytest.mark.control("MLSL-GW-05", owasp="LLM10", atlas="AML.T0034, AML.M0004")
def test_gateway_rate_limits(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Every proxied endpoint is rate- and connection-limited per key; a burst gets 429."""
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -T fails on {node.name}: {conf.error}"
    zones = {}
    for _, d in conf.find("limit_req_zone"):
        opts = dict(a.split("=", 1) for a in d.args if "=" in a)
        zones[opts.get("zone", "").split(":")[0]] = opts.get("rate", "")
    wrong = []
    bursts = []
    proxied = [
        d for s in conf.servers() for d in s.children("location") if d.children("proxy_pass")
    ]
    for loc in proxied:
        reqs = loc.children("limit_req")
        if not reqs:
            wrong.append(f"`{loc}` has no limit_req")
        for r in reqs:
            opts = dict(a.split("=", 1) for a in r.args if "=" in a)
            if not zones.get(opts.get("zone", "")):
                wrong.append(f"`{loc}`: limit_req zone {opts.get('zone')!r} has no rate")
            bursts.append(int(opts.get("burst", "0")))
        if not loc.children("limit_conn"):
            wrong.append(f"`{loc}` has no limit_conn")
    status = [d.args for _, d in conf.find("limit_req_status")]
    if status != [["429"]]:
        wrong.append(f"limit_req_status {status}, expected 429")
    # live: one client, one connection (so limit_conn cannot answer), more than rate + burst
    clients = _clients(lab)
    client = max(clients, key=lambda c: clients[c])  # the fastest to recover afterwards
    key = _client_key(lab, client)
    count = max(bursts, default=10) + 5  # no limit_req at all: nginx's burst default is 0
    codes: list[int] = []
    conn = _connect(node, lab)
    try:
        for _ in range(count):
            codes.append(_send(conn, "GET", "/v1/models", key=key).status)
    finally:
        with contextlib.suppress(OSError):
            conn.close()
    if 429 not in codes:
        wrong.append(f"{count} quick requests by {client} got {sorted(set(codes))}, none 429")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
