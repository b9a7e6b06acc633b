"""Tampers for the service checks (gateway, inference, vectordb, rag, observability).

The format is tampers.py's: ``apply`` and ``revert`` run as root on the node
and are ``str.format``-ed with ``{mgmt}`` and ``{service}`` (so literal braces
are doubled). Every file a tamper changes is copied to /root/tamper-<name>.*
first and copied back with ``cp -p`` (content, mode, owner and times), and the
service is reloaded or restarted the way the role's handler does it. Tampers
that restart a service wait in ``apply`` and in ``revert`` until it answers
again (the model server loads its models before it listens: a few seconds).
"""

from __future__ import annotations

if __package__:  # imported as posture.tampers_b (the test suite's pythonpath has tests/)
    from .tampers import Tamper
else:  # imported beside tampers.py (tests/posture on sys.path, pytest's rootdir-less mode)
    from tampers import Tamper

# --- helpers: each returns shell text (already brace-safe for str.format) ---------------------


def _wait_port(address: str, port: int, seconds: int = 120) -> str:
    """Wait until something accepts TCP on address:port; a subshell that fails after ``seconds``."""
    return (
        f"(i=0; until timeout 1 bash -c '</dev/tcp/{address}/{port}' 2>/dev/null; do "
        f'i=$((i+1)); [ "$i" -ge {seconds} ] && '
        f'echo "{address}:{port} did not come back" >&2 && exit 1; '
        "sleep 1; done)"
    )


def _backup(name: str, path: str) -> str:
    return f"cp -p {path} /root/tamper-{name}.bak"


def _restore(name: str, path: str) -> str:
    return f"cp -p /root/tamper-{name}.bak {path} && rm -f /root/tamper-{name}.bak"


# --- gateway: nginx.conf edited, validated, reloaded -------------------------------------------

NGINX_CONF = "/etc/nginx/nginx.conf"
NGINX_RELOAD = "nginx -t -q && systemctl reload nginx.service && sleep 1"
GATEWAY_TLS = "/etc/nginx/mlseclab/tls"


def _nginx(name: str, breaks: tuple[str, ...], edit: str) -> Tamper:
    """A tamper that edits nginx.conf with ``edit`` (a sed -i argument list) and reloads."""
    return Tamper(
        name=name,
        node="gateway-01",
        breaks=breaks,
        apply=f"{_backup(name, NGINX_CONF)} && sed -i {edit} {NGINX_CONF} && {NGINX_RELOAD}",
        revert=f"{_restore(name, NGINX_CONF)} && {NGINX_RELOAD}",
    )


GATEWAY = [
    _nginx(
        "gateway-legacy-tls",
        ("test_gateway_tls_only",),
        "-e 's/ssl_protocols .*;/ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;/' "
        "-e 's/ssl_ciphers .*;/ssl_ciphers DEFAULT:@SECLEVEL=0;/'",
    ),
    Tamper(
        name="gateway-foreign-certificate",
        node="gateway-01",
        breaks=("test_gateway_certificate_from_lab_ca",),
        apply=(
            f"cp -p {GATEWAY_TLS}/server.crt /root/tamper-gateway-foreign-certificate.crt && "
            f"cp -p {GATEWAY_TLS}/server.key /root/tamper-gateway-foreign-certificate.key && "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
            "-subj /CN=not-the-lab-ca.invalid "
            f"-keyout {GATEWAY_TLS}/server.key -out {GATEWAY_TLS}/server.crt 2>/dev/null && "
            f"{NGINX_RELOAD}"
        ),
        revert=(
            f"cp -p /root/tamper-gateway-foreign-certificate.crt {GATEWAY_TLS}/server.crt && "
            f"cp -p /root/tamper-gateway-foreign-certificate.key {GATEWAY_TLS}/server.key && "
            "rm -f /root/tamper-gateway-foreign-certificate.crt "
            "/root/tamper-gateway-foreign-certificate.key && "
            f"{NGINX_RELOAD}"
        ),
    ),
    _nginx(
        "gateway-server-tokens",
        ("test_gateway_hides_server_version",),
        "'s/server_tokens off;/server_tokens on;/'",
    ),
    _nginx("gateway-no-hsts", ("test_gateway_sends_hsts",), "'/Strict-Transport-Security/d'"),
    _nginx(
        "gateway-no-key-check",
        ("test_gateway_requires_api_key",),
        "'s/^\\( *\\)return 401 /\\1# return 401 /'",
    ),
    _nginx(
        "gateway-docs-exposed",
        ("test_gateway_endpoint_allowlist",),
        "'s|^\\( *\\)location / {{|"
        "\\1location = /docs {{ proxy_pass http://mlseclab_inference; }}\\n&|'",
    ),
    _nginx(
        "gateway-unbounded-body",
        ("test_gateway_body_size_and_timeouts",),
        "'s/client_max_body_size .*;/client_max_body_size 0;/'",
    ),
    _nginx(
        "gateway-plain-access-log",
        ("test_gateway_json_access_log",),
        "'s|access_log \\(.*\\) mlseclab_json;|access_log \\1 combined;|'",
    ),
    Tamper(
        name="gateway-config-readable",
        node="gateway-01",
        breaks=("test_gateway_config_single_private_file",),
        apply=f"chmod 0644 {NGINX_CONF}",
        revert=f"chmod 0600 {NGINX_CONF}",
    ),
    _nginx("gateway-no-rate-limit", ("test_gateway_rate_limits",), "'/limit_req zone=/d'"),
]

# --- inference: server.json or a unit drop-in, then a restart that reloads the models -----------

INF_CONFIG = "/etc/mlseclab/inference/server.json"
INF_DROPIN_DIR = "/etc/systemd/system/mlseclab-inference.service.d"
# reset-failed first: the unit allows 3 starts in 5 minutes (StartLimitBurst), and the
# inference tampers restart it twice each
INF_RESTART = (
    "(systemctl reset-failed mlseclab-inference.service || true) && "
    f"systemctl restart mlseclab-inference.service && {_wait_port('{service}', 8000)}"
)
INF_MODEL = "/srv/models/all-MiniLM-L6-v2-f16.gguf"  # a served model of the reference lab


def _inference_config(name: str, breaks: tuple[str, ...], edit: str) -> Tamper:
    return Tamper(
        name=name,
        node="inference-01",
        breaks=breaks,
        apply=f"{_backup(name, INF_CONFIG)} && sed -i {edit} {INF_CONFIG} && {INF_RESTART}",
        revert=f"{_restore(name, INF_CONFIG)} && {INF_RESTART}",
    )


def _inference_dropin(name: str, breaks: tuple[str, ...], write: str) -> Tamper:
    """A unit drop-in written by ``write`` (shell that prints it), daemon-reload, restart."""
    path = f"{INF_DROPIN_DIR}/tamper-{name}.conf"
    return Tamper(
        name=name,
        node="inference-01",
        breaks=breaks,
        apply=(
            f"mkdir -p {INF_DROPIN_DIR} && (umask 077; {write} > {path}) && "
            f"systemctl daemon-reload && {INF_RESTART}"
        ),
        revert=(
            f"rm -f {path} && rmdir --ignore-fail-on-non-empty {INF_DROPIN_DIR} && "
            f"systemctl daemon-reload && {INF_RESTART}"
        ),
    )


INFERENCE = [
    _inference_config(
        "inference-bind-all",
        ("test_inference_api_bound_to_inference_address",),
        '\'s/"host": "[0-9.]*"/"host": "0.0.0.0"/\'',
    ),
    _inference_config(
        "inference-no-api-key",
        ("test_inference_api_requires_key",),
        '\'s/"api_key": "[^"]*"/"api_key": null/\'',
    ),
    _inference_dropin(
        "inference-key-in-argv",
        ("test_inference_key_not_exposed",),
        # the key goes through a shell variable and printf (a builtin): only the drop-in holds it
        "k=$(python3 -c 'import json; print(json.load(open(\""
        + INF_CONFIG
        + '"))["api_key"])\') && '
        "printf '[Service]\\nExecStart=\\nExecStart=/opt/mlseclab/inference/venv/bin/python "
        '-m llama_cpp.server --api_key %s\\n\' "$k"',
    ),
    Tamper(
        name="inference-config-world-readable",
        node="inference-01",
        breaks=("test_inference_key_not_exposed",),
        apply=f"chmod 0644 {INF_CONFIG}",
        revert=f"chmod 0640 {INF_CONFIG}",
    ),
    Tamper(
        # a model file replaced under the running server (bind mount of a changed copy)
        name="inference-model-swapped",
        node="inference-01",
        breaks=("test_inference_models_match_manifest",),
        apply=(
            f"cp {INF_MODEL} /run/tamper-inference-model-swapped.gguf && "
            "printf x >> /run/tamper-inference-model-swapped.gguf && "
            f"mount --bind /run/tamper-inference-model-swapped.gguf {INF_MODEL}"
        ),
        revert=f"umount {INF_MODEL} && rm -f /run/tamper-inference-model-swapped.gguf",
    ),
    Tamper(
        # pickles in the (read-only) models directory, through an overlay: one by its suffix,
        # one disguised as safetensors (found by its content)
        name="inference-pickle-planted",
        node="inference-01",
        breaks=("test_inference_no_pickle_models",),
        apply=(
            "mkdir -p /run/tamper-pickle && mount -t tmpfs tmpfs /run/tamper-pickle && "
            "mkdir /run/tamper-pickle/u /run/tamper-pickle/w && "
            "mount -t overlay overlay -o lowerdir=/srv/models,upperdir=/run/tamper-pickle/u,"
            "workdir=/run/tamper-pickle/w /srv/models && "
            'python3 -c \'import pickle; open("/srv/models/adapter.safetensors", "wb")'
            '.write(pickle.dumps(["not", "weights"], protocol=4))\' && '
            "cp /srv/models/adapter.safetensors /srv/models/extra.pkl"
        ),
        revert="umount /srv/models && umount /run/tamper-pickle && rmdir /run/tamper-pickle",
    ),
    _inference_dropin(
        "inference-unsandboxed",
        ("test_inference_unit_sandboxed", "test_inference_runs_as_dedicated_account"),
        "printf '[Service]\\nUser=root\\nGroup=root\\nNoNewPrivileges=no\\nProtectSystem=no\\n"
        "PrivateTmp=no\\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_NET_ADMIN\\n'",
    ),
]

# --- vectordb: postgresql.conf / pg_hba.conf edits, catalog changes, a chmod ---------------------

PG_CONF = "/etc/postgresql/17/main/postgresql.conf"
PG_HBA = "/etc/postgresql/17/main/pg_hba.conf"
PG_UNIT = "postgresql@17-main.service"
PG_READY = (
    "(i=0; until runuser -u postgres -- pg_isready -q; do i=$((i+1)); "
    '[ "$i" -ge 60 ] && echo "postgres did not come back" >&2 && exit 1; sleep 1; done)'
)
PG_RELOAD = f"systemctl reload {PG_UNIT} && sleep 1"
PG_RESTART = f"systemctl restart {PG_UNIT} && {PG_READY}"
PSQL = "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d rag -c"


def _pg_file(name: str, breaks: tuple[str, ...], path: str, edit: str, activate: str) -> Tamper:
    return Tamper(
        name=name,
        node="vectordb-01",
        breaks=breaks,
        apply=f"{_backup(name, path)} && sed -i {edit} {path} && {activate}",
        revert=f"{_restore(name, path)} && {activate}",
    )


def _pg_sql(name: str, breaks: tuple[str, ...], apply: str, revert: str) -> Tamper:
    return Tamper(
        name=name,
        node="vectordb-01",
        breaks=breaks,
        apply=f'{PSQL} "{apply}"',
        revert=f'{PSQL} "{revert}"',
    )


VECTORDB = [
    _pg_file(
        "vectordb-listen-all",
        ("test_vectordb_listens_on_data_address_only",),
        PG_CONF,
        "\"s/^listen_addresses = .*/listen_addresses = '*'/\"",
        PG_RESTART,
    ),
    _pg_file(
        "vectordb-ssl-off",
        ("test_vectordb_tls_on",),
        PG_CONF,
        "'s/^ssl = on/ssl = off/'",
        PG_RELOAD,
    ),
    _pg_file(
        "vectordb-md5-passwords",
        ("test_vectordb_password_encryption_scram",),
        PG_CONF,
        "'s/^password_encryption = .*/password_encryption = md5/'",
        PG_RELOAD,
    ),
    _pg_file(
        "vectordb-hba-trust",
        ("test_vectordb_hba_scram_from_rag_only", "test_vectordb_hba_rejects_everything_else"),
        PG_HBA,
        "'/^local *all *postgres/i host all all {service}/32 trust'",
        PG_RELOAD,
    ),
    _pg_file(
        "vectordb-hba-md5",
        ("test_vectordb_hba_scram_from_rag_only",),
        PG_HBA,
        "'s/^\\(hostssl.*\\)scram-sha-256/\\1md5/'",
        PG_RELOAD,
    ),
    _pg_file(
        "vectordb-hba-no-hostnossl-reject",
        ("test_vectordb_hba_rejects_everything_else",),
        PG_HBA,
        "'/^hostnossl/d'",
        PG_RELOAD,
    ),
    _pg_sql(
        "vectordb-ingest-superuser",
        ("test_vectordb_roles_not_privileged",),
        "ALTER ROLE rag_ingest SUPERUSER",
        "ALTER ROLE rag_ingest NOSUPERUSER",
    ),
    _pg_sql(
        "vectordb-query-can-insert",
        ("test_vectordb_query_role_read_only",),
        "GRANT INSERT ON rag.documents TO rag_query",
        "REVOKE INSERT ON rag.documents FROM rag_query",
    ),
    _pg_sql(
        "vectordb-rls-off",
        ("test_vectordb_documents_rls_enabled",),
        "ALTER TABLE rag.documents DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE rag.documents ENABLE ROW LEVEL SECURITY",
    ),
    Tamper(
        name="vectordb-data-dir-open",
        node="vectordb-01",
        breaks=("test_vectordb_data_dir_private",),
        apply=f"chmod 0755 \"$({PSQL} 'SHOW data_directory')\"",
        revert=f"chmod 0700 \"$({PSQL} 'SHOW data_directory')\"",
    ),
]

# --- rag ------------------------------------------------------------------------------------------

RAG_DROPIN_DIR = "/etc/systemd/system/mlseclab-rag.service.d"
RAG_SETTINGS = "/etc/mlseclab/rag/settings.json"
RAG_DB_PASSWORD = "/etc/mlseclab/rag/credentials/db-query-password"

RAG = [
    Tamper(
        name="rag-login-shell",
        node="rag-01",
        breaks=("test_rag_service_account",),
        apply="usermod -s /bin/bash rag",
        revert="usermod -s /usr/sbin/nologin rag",
    ),
    Tamper(
        name="rag-credential-group-readable",
        node="rag-01",
        breaks=("test_rag_credentials_root_only",),
        apply=f"chown root:rag {RAG_DB_PASSWORD} && chmod 0640 {RAG_DB_PASSWORD}",
        revert=f"chown root:root {RAG_DB_PASSWORD} && chmod 0600 {RAG_DB_PASSWORD}",
    ),
    Tamper(
        # the principal signing key back on the RAG node: the service could sign principals
        name="rag-signing-key-on-node",
        node="rag-01",
        breaks=("test_rag_credentials_root_only",),
        apply=(
            "umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \\n' "
            "> /etc/mlseclab/rag/credentials/signing-key"
        ),
        revert="rm -f /etc/mlseclab/rag/credentials/signing-key",
    ),
    Tamper(
        name="rag-unsandboxed",
        node="rag-01",
        breaks=("test_rag_unit_sandboxed",),
        apply=(
            f"mkdir -p {RAG_DROPIN_DIR} && printf '[Service]\\nNoNewPrivileges=no\\n"
            "ProtectSystem=no\\nPrivateTmp=no\\nCapabilityBoundingSet=CAP_SYS_ADMIN\\n' "
            f"> {RAG_DROPIN_DIR}/tamper.conf && "
            "systemctl daemon-reload"
        ),
        revert=(
            f"rm -f {RAG_DROPIN_DIR}/tamper.conf && "
            f"rmdir --ignore-fail-on-non-empty {RAG_DROPIN_DIR} && "
            "systemctl daemon-reload"
        ),
    ),
    Tamper(
        name="rag-db-tls-unverified",
        node="rag-01",
        breaks=("test_rag_peers_verified_with_lab_ca",),
        apply=(
            f"{_backup('rag-db-tls-unverified', RAG_SETTINGS)} && "
            f"sed -i 's/verify-full/require/' {RAG_SETTINGS}"
        ),
        revert=_restore("rag-db-tls-unverified", RAG_SETTINGS),
    ),
]

# --- observability ------------------------------------------------------------------------------

PROM_CONFIG = "/etc/prometheus/prometheus.yml"
PROM_DEFAULTS = "/etc/default/prometheus"
EXPORTER_DEFAULTS = "/etc/default/prometheus-node-exporter"
JR_SOCKET_DROPIN = "/etc/systemd/system/systemd-journal-remote.socket.d/mlseclab.conf"
JR_RESTART = (
    "systemctl stop systemd-journal-remote.service systemd-journal-remote.socket && "
    "systemctl daemon-reload && systemctl start systemd-journal-remote.socket && "
    "systemctl start systemd-journal-remote.service"
)

OBSERVABILITY = [
    Tamper(
        name="obs-scrape-off-mgmt",
        node="obs-01",
        breaks=("test_prometheus_scrapes_mgmt_addresses_only",),
        apply=(
            f"{_backup('obs-scrape-off-mgmt', PROM_CONFIG)} && "
            "printf '  - job_name: tamper\\n    static_configs:\\n"
            '      - targets: ["{service}:9100"]\\n\' '
            f">> {PROM_CONFIG} && systemctl reload prometheus.service && sleep 3"
        ),
        revert=(
            f"{_restore('obs-scrape-off-mgmt', PROM_CONFIG)} && "
            "systemctl reload prometheus.service && sleep 3"
        ),
    ),
    Tamper(
        name="obs-prometheus-all-addresses",
        node="obs-01",
        breaks=("test_prometheus_listens_on_mgmt_only",),
        apply=(
            f"{_backup('obs-prometheus-all-addresses', PROM_DEFAULTS)} && "
            "sed -i 's/--web.listen-address=[0-9.]*:9090/--web.listen-address=0.0.0.0:9090/' "
            f"{PROM_DEFAULTS} && "
            f"systemctl restart prometheus.service && {_wait_port('{mgmt}', 9090)}"
        ),
        revert=(
            f"{_restore('obs-prometheus-all-addresses', PROM_DEFAULTS)} && "
            f"systemctl restart prometheus.service && {_wait_port('{mgmt}', 9090)}"
        ),
    ),
    Tamper(
        name="obs-journal-remote-extra-listener",
        node="obs-01",
        breaks=("test_journal_remote_listens_on_mgmt",),
        apply=(
            f"{_backup('obs-journal-remote-extra-listener', JR_SOCKET_DROPIN)} && "
            f"echo 'ListenStream={{service}}:19532' >> {JR_SOCKET_DROPIN} && {JR_RESTART}"
        ),
        revert=f"{_restore('obs-journal-remote-extra-listener', JR_SOCKET_DROPIN)} && {JR_RESTART}",
    ),
    Tamper(
        name="node-exporter-all-addresses",
        node="rag-01",
        breaks=("test_node_exporter_on_mgmt_only",),
        apply=(
            f"{_backup('node-exporter-all-addresses', EXPORTER_DEFAULTS)} && "
            "sed -i 's/--web.listen-address=[0-9.]*:9100/--web.listen-address=:9100/' "
            f"{EXPORTER_DEFAULTS} && "
            f"systemctl restart prometheus-node-exporter.service && {_wait_port('{mgmt}', 9100)}"
        ),
        revert=(
            f"{_restore('node-exporter-all-addresses', EXPORTER_DEFAULTS)} && "
            f"systemctl restart prometheus-node-exporter.service && {_wait_port('{mgmt}', 9100)}"
        ),
    ),
    Tamper(
        name="journal-upload-stopped",
        node="rag-01",
        breaks=("test_journal_upload_to_observability",),
        apply="systemctl stop systemd-journal-upload.service",
        revert="systemctl start systemd-journal-upload.service",
    ),
]

TAMPERS: list[Tamper] = [*GATEWAY, *INFERENCE, *VECTORDB, *RAG, *OBSERVABILITY]
