"""The vector database (PostgreSQL + pgvector): listen address, TLS, SCRAM, pg_hba, roles, RLS.

The server is asked over its local socket as postgres (peer authentication,
no password): ``pg_settings`` for what the running server uses,
``pg_file_settings`` and ``pg_hba_file_rules`` for what its files say now, and
the catalogs for roles, grants and row-level security. Network probes run on
the node against its own data address, as the unprivileged user nobody, so
they exercise the rules the server loaded: a connection from an address that
is not the RAG node's must be rejected, with TLS or without.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from service_state import file_states, listeners, mode_findings, secrets, service_address

from mlseclab.posture.plugin import PostureLab, PostureNode

pytestmark = pytest.mark.roles("vectordb")

PORT = 5432
DATABASE = "rag"
SCHEMA = "rag"
OWNER_ROLE = "rag_owner"
INGEST_ROLE = "rag_ingest"
QUERY_ROLE = "rag_query"
APP_ROLES = (OWNER_ROLE, INGEST_ROLE, QUERY_ROLE)
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SETTINGS = (
    "listen_addresses",
    "port",
    "ssl",
    "ssl_min_protocol_version",
    "ssl_key_file",
    "password_encryption",
    "data_directory",
    "hba_file",
)


def _sql(host: Any, sql: str, database: str = "postgres") -> Any:
    """One query over the local socket as postgres; it must return one JSON value."""
    cmd = host.run(
        "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d %s -c %s", database, sql
    )
    assert cmd.rc == 0, f"psql on the local socket failed: {cmd.stderr.strip()[-600:]}"
    return json.loads(cmd.stdout)


_SETTINGS_SQL = """
SELECT json_build_object(
  'live', (SELECT json_object_agg(name, json_build_array(setting, pending_restart))
           FROM pg_settings WHERE name IN ({names})),
  'file', (SELECT json_object_agg(name, setting)
           FROM pg_file_settings WHERE name IN ({names}) AND applied),
  'errors', (SELECT coalesce(json_agg(sourcefile || ':' || sourceline || ' ' || error), '[]')
             FROM pg_file_settings WHERE error IS NOT NULL))
"""


def _settings(host: Any) -> dict[str, Any]:
    """Running values (with pending_restart) and what the configuration files say now."""
    names = ",".join(f"'{n}'" for n in SETTINGS)
    return dict(_sql(host, _SETTINGS_SQL.format(names=names)))


def _setting_findings(s: dict[str, Any], name: str, want: str) -> list[str]:
    live, pending = s["live"].get(name, [None, False])
    wrong = []
    if live != want:
        wrong.append(f"the server runs with {name} = {live!r}, expected {want!r}")
    if pending:
        wrong.append(f"{name} changed in the files and waits for a restart")
    if (s["file"] or {}).get(name) != want:
        found = (s["file"] or {}).get(name)
        wrong.append(f"the configuration files set {name} = {found!r}, expected {want!r}")
    return wrong


@pytest.mark.control("MLSL-VDB-03", owasp="LLM08", atlas="AML.T0036")
def test_vectordb_listens_on_data_address_only(node: PostureNode, host: Any) -> None:
    """PostgreSQL listens on the data address only (listen_addresses, live and in the file)."""
    address = service_address(node)
    s = _settings(host)
    wrong = _setting_findings(s, "listen_addresses", address)
    wrong += [f"configuration error: {e}" for e in s["errors"]]
    sockets = sorted(
        f"{ls.address}:{ls.port}" for ls in listeners(host) if "postgres" in ls.processes
    )
    if sockets != [f"{address}:{PORT}"]:
        wrong.append(f"postgres listens on {sockets}, expected only {address}:{PORT}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# A TLS handshake with the server (STARTTLS), verified against the lab CA passed as $1.
_TLS_PROBE = (
    'openssl s_client -starttls postgres -connect "$2:$3" -CAfile <(printf %s "$1") '
    '-verify_return_error -verify_hostname "$4" -brief </dev/null 2>&1'
)


@pytest.mark.control("MLSL-VDB-04", owasp="LLM08", atlas="AML.T0036, AML.T0055")
def test_vectordb_tls_on(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """PostgreSQL speaks TLS 1.2+ with a lab-CA certificate; its key is postgres-only."""
    s = _settings(host)
    wrong = _setting_findings(s, "ssl", "on")
    minimum = s["live"].get("ssl_min_protocol_version", [""])[0]
    if minimum not in ("TLSv1.2", "TLSv1.3"):
        wrong.append(f"ssl_min_protocol_version = {minimum!r}, expected TLSv1.2 or TLSv1.3")
    ca = secrets(lab).ca_cert.read_text(encoding="utf-8")
    name = f"{node.name}.{lab.spec.lab.domain}"
    out = host.run(
        "bash -c %s tls %s %s %s %s", _TLS_PROBE, ca, service_address(node), str(PORT), name
    ).stdout
    lines = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    verified, protocol = lines.get("Verification", "none"), lines.get("Protocol version", "none")
    if verified != "OK" or protocol not in ("TLSv1.2", "TLSv1.3"):
        wrong.append(
            f"TLS to {service_address(node)}:{PORT}: verification {verified!r}, "
            f"protocol {protocol!r} ({out.strip().splitlines()[-1:]})"
        )
    key = s["live"].get("ssl_key_file", [""])[0]
    wrong += mode_findings(file_states(host, [key])[key], mode=0o600, owner="postgres")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-VDB-05", owasp="LLM08", atlas="AML.T0036")
def test_vectordb_password_encryption_scram(node: PostureNode, host: Any) -> None:
    """Passwords are hashed with SCRAM-SHA-256 (setting, file, and every stored verifier)."""
    s = _settings(host)
    wrong = _setting_findings(s, "password_encryption", "scram-sha-256")
    weak = _sql(
        host,
        "SELECT coalesce(json_agg(rolname), '[]') FROM pg_authid "
        "WHERE rolpassword IS NOT NULL AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'",
    )
    if weak:
        wrong.append(f"roles with a non-SCRAM password verifier: {weak}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _rag_addresses(node: PostureNode, lab: PostureLab) -> set[str]:
    """Where the RAG node connects from: the flow's sources that are not mgmt addresses."""
    mgmt = {n.mgmt.ip for n in lab.topology.nodes.values()}
    sources = {
        a
        for rule in lab.topology.ingress(node.name)
        if rule.port == PORT
        for a in rule.source_addresses
    }
    return sources - mgmt


def _hba(host: Any) -> dict[str, Any]:
    got = _sql(
        host,
        "SELECT json_build_object("
        "'rules', (SELECT json_agg(row_to_json(r) ORDER BY rule_number) FROM pg_hba_file_rules r), "
        "'file', current_setting('hba_file'), "
        "'loaded', extract(epoch FROM pg_conf_load_time()))",
    )
    mtime = host.check_output("stat -c %%Y %s", got["file"])
    got["mtime"] = int(mtime)
    got["lines"] = [
        line.split()
        for line in host.check_output("cat %s", got["file"]).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return dict(got)


TCP_TYPES = ("host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc")


def _hba_common_findings(hba: dict[str, Any]) -> list[str]:
    wrong = [
        f"pg_hba error line {r['line_number']}: {r['error']}" for r in hba["rules"] if r["error"]
    ]
    wrong += [
        f"{r['file_name']} is included" for r in hba["rules"] if r["file_name"] != hba["file"]
    ]
    if any(line[0].startswith("include") for line in hba["lines"]):
        wrong.append(f"{hba['file']} includes other files")
    if hba["mtime"] > hba["loaded"] + 1:
        wrong.append(f"{hba['file']} changed after the server last loaded its configuration")
    return wrong


def _rule(r: dict[str, Any]) -> str:
    addr = f"{r['address']}/{r['netmask']}" if r["address"] else ""
    words = [
        r["type"],
        ",".join(r["database"] or []),
        ",".join(r["user_name"] or []),
        addr,
        r["auth_method"],
    ]
    return f"line {r['line_number']}: " + " ".join(w for w in words if w)


@pytest.mark.control("MLSL-VDB-06", owasp="LLM08", atlas="AML.T0036, AML.M0019")
def test_vectordb_hba_scram_from_rag_only(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """pg_hba lets in only TLS + SCRAM from the RAG node's address(es), never trust."""
    rag = _rag_addresses(node, lab)
    assert rag, f"the spec gives {node.name} no client on port {PORT} outside mgmt"
    hba = _hba(host)
    wrong = _hba_common_findings(hba)
    allowed_from: set[str] = set()
    for r in hba["rules"]:
        if r["auth_method"] == "trust":
            wrong.append(f"trust: {_rule(r)}")
            continue
        if r["type"] not in TCP_TYPES or r["auth_method"] == "reject":
            continue
        if r["type"] != "hostssl" or r["auth_method"] != "scram-sha-256":
            wrong.append(f"TCP rule that is not hostssl scram-sha-256: {_rule(r)}")
        if r["netmask"] != "255.255.255.255" or r["address"] not in rag:
            wrong.append(
                f"TCP rule for {r['address']}/{r['netmask']}, "
                f"expected only {sorted(rag)}/32: {_rule(r)}"
            )
        if {"all", "postgres"} & set(r["user_name"] or []) or "all" in (r["database"] or []):
            wrong.append(f"TCP rule for all databases, all users or postgres: {_rule(r)}")
        allowed_from.add(r["address"])
    if allowed_from != rag:
        wrong.append(
            f"hostssl rules admit {sorted(allowed_from)}, expected the RAG node's {sorted(rag)}"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# Connect to the node's own data address as nobody: an address that is not the RAG node's.
_REJECT_PROBE = (
    'for mode in disable require; do for user in "$2" postgres; do '
    'printf "%s %s: " "$mode" "$user"; '
    'runuser -u nobody -- psql -w -XAtqc "select 1" '
    '"host=$1 port=$3 dbname=$4 user=$user sslmode=$mode connect_timeout=5" 2>&1 | tail -n 1; '
    "done; done"
)


@pytest.mark.control("MLSL-VDB-07", owasp="LLM08", atlas="AML.T0036")
def test_vectordb_hba_rejects_everything_else(node: PostureNode, host: Any) -> None:
    """Everything but the RAG node's TLS login is rejected: hostnossl and catch-all reject rules."""
    hba = _hba(host)
    wrong = _hba_common_findings(hba)
    rules = {
        (
            r["type"],
            tuple(r["database"]),
            tuple(r["user_name"]),
            r["address"],
            r["netmask"],
            r["auth_method"],
        )
        for r in hba["rules"]
    }
    for kind in ("hostnossl", "host"):
        for addr, mask in (("0.0.0.0", "0.0.0.0"), ("::", "::")):  # noqa: S104 - pg_hba, not a bind
            if (kind, ("all",), ("all",), addr, mask, "reject") not in rules:
                wrong.append(f"no `{kind} all all {addr}/0 reject` rule")
    last = hba["rules"][-1] if hba["rules"] else None
    if not last or last["type"] != "host" or last["auth_method"] != "reject":
        wrong.append(
            f"the last rule is not a catch-all host reject: {_rule(last) if last else 'none'}"
        )
    local = [r for r in hba["rules"] if r["type"] == "local" and r["auth_method"] != "reject"]
    wrong += [
        f"local login other than postgres by peer: {_rule(r)}"
        for r in local
        if (r["user_name"], r["auth_method"]) != (["postgres"], "peer")
    ]
    out = host.check_output(
        "bash -c %s probe %s %s %s %s",
        _REJECT_PROBE,
        service_address(node),
        QUERY_ROLE,
        str(PORT),
        DATABASE,
    )
    for line in out.splitlines():
        what, _, result = line.partition(": ")
        if "pg_hba.conf rejects connection" not in result:
            wrong.append(
                f"sslmode={what} from {service_address(node)} was not rejected by pg_hba: "
                f"{result.strip()[-160:]}"
            )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


_ROLES_SQL = """
SELECT json_object_agg(rolname, json_build_object(
  'super', rolsuper, 'login', rolcanlogin, 'createrole', rolcreaterole,
  'createdb', rolcreatedb, 'replication', rolreplication, 'bypassrls', rolbypassrls,
  'member_of', (SELECT coalesce(json_agg(b.rolname), '[]')
                FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
                WHERE m.member = r.oid)))
FROM pg_roles r WHERE rolname !~ '^pg_'
"""

# For each table of the schema: which table privileges each app role holds (grants, PUBLIC and
# memberships included: has_table_privilege); CREATE on the schemas; what PUBLIC has on the db.
_PRIVILEGES_SQL = """
SELECT json_build_object(
  'tables', (SELECT coalesce(json_object_agg(c.oid::regclass::text,
                (SELECT json_object_agg(role,
                    (SELECT coalesce(json_agg(p), '[]') FROM unnest(ARRAY[{privs}]) p
                     WHERE has_table_privilege(role, c.oid, p)))
                 FROM unnest(ARRAY['{query}', '{ingest}']) role)), '{{}}')
             FROM pg_class c
             WHERE c.relnamespace = '{schema}'::regnamespace AND c.relkind IN ('r', 'p')),
  'create', (SELECT json_object_agg(role || ' on ' || s, has_schema_privilege(role, s, 'CREATE'))
             FROM unnest(ARRAY['{query}', '{ingest}']) role,
                  unnest(ARRAY['{schema}', 'public']) s),
  'public_db', (SELECT coalesce(json_agg(a.privilege_type), '[]')
                FROM pg_database d, aclexplode(d.datacl) a
                WHERE d.datname = '{db}' AND a.grantee = 0))
"""

_RLS_SQL = """
SELECT json_build_object(
  'tables', (SELECT coalesce(json_object_agg(relname, relrowsecurity), '{{}}') FROM pg_class
             WHERE relnamespace = '{schema}'::regnamespace AND relkind IN ('r', 'p')),
  'policies', (SELECT coalesce(json_agg(json_build_array(tablename, policyname, roles)), '[]')
               FROM pg_policies WHERE schemaname = '{schema}'))
"""


@pytest.mark.control("MLSL-VDB-08", owasp="LLM08", atlas="AML.T0036, AML.T0012")
def test_vectordb_roles_not_privileged(node: PostureNode, host: Any) -> None:
    """No application role is a superuser or holds role-level powers; the owner cannot log in."""
    roles = _sql(host, _ROLES_SQL)
    wrong = [f"role {name} is missing" for name in APP_ROLES if name not in roles]
    supers = sorted(n for n, r in roles.items() if r["super"])
    if supers != ["postgres"]:
        wrong.append(f"superusers {supers}, expected only postgres")
    for name in sorted(set(roles) - {"postgres"}):
        r = roles[name]
        powers = [
            p for p in ("super", "createrole", "createdb", "replication", "bypassrls") if r[p]
        ]
        if powers:
            wrong.append(f"{name} has {powers}")
        if r["member_of"]:
            wrong.append(f"{name} is a member of {r['member_of']}")
    if roles.get(OWNER_ROLE, {}).get("login"):
        wrong.append(f"{OWNER_ROLE} (owns the schema, bypasses RLS) can log in")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-VDB-09", owasp="LLM08", atlas="AML.T0036, AML.M0019")
def test_vectordb_query_role_read_only(node: PostureNode, host: Any) -> None:
    """The query role can only SELECT; ingest has DML but no DDL; PUBLIC cannot connect."""
    privs = ",".join(f"'{p}'" for p in TABLE_PRIVILEGES)
    sql = _PRIVILEGES_SQL.format(
        privs=privs, query=QUERY_ROLE, ingest=INGEST_ROLE, schema=SCHEMA, db=DATABASE
    )
    got = _sql(host, sql, DATABASE)
    wrong = []
    if not got["tables"]:
        wrong.append(f"no tables in schema {SCHEMA}")
    for table, by_role in sorted(got["tables"].items()):
        if sorted(by_role[QUERY_ROLE]) != ["SELECT"]:
            wrong.append(
                f"{QUERY_ROLE} has {sorted(by_role[QUERY_ROLE])} on {table}, expected only SELECT"
            )
        extra = sorted(set(by_role[INGEST_ROLE]) - {"SELECT", "INSERT", "UPDATE", "DELETE"})
        if extra:
            wrong.append(f"{INGEST_ROLE} has {extra} on {table}")
    wrong += [f"{who} has CREATE" for who, can in sorted(got["create"].items()) if can]
    if got["public_db"]:
        wrong.append(f"PUBLIC has {got['public_db']} on database {DATABASE}")
    # live: the query role's INSERT must be refused for lack of privilege (then rolled back)
    attempt = host.run(
        "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d %s -c %s",
        DATABASE,
        f"BEGIN; SET LOCAL ROLE {QUERY_ROLE}; "
        f"INSERT INTO {SCHEMA}.documents (tenant, content, embedding) "
        "VALUES ('posture', 'posture', NULL); "
        "ROLLBACK;",
    )
    if "permission denied" not in attempt.stderr:
        error = attempt.stderr.strip()[-200:] or "it succeeded"
        wrong.append(f"INSERT as {QUERY_ROLE} was not refused for privileges: {error}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-VDB-12", owasp="LLM08", atlas="AML.T0070, AML.M0019")
def test_vectordb_documents_rls_enabled(node: PostureNode, host: Any) -> None:
    """Row-level security is on for every table of the schema; policies name only the app roles."""
    got = _sql(host, _RLS_SQL.format(schema=SCHEMA), DATABASE)
    wrong = []
    if "documents" not in got["tables"]:
        wrong.append(f"{SCHEMA}.documents does not exist")
    wrong += [
        f"{SCHEMA}.{t} has row-level security off"
        for t, on in sorted(got["tables"].items())
        if not on
    ]
    for table, policy, roles in got["policies"]:
        stray = sorted(set(roles) - {INGEST_ROLE, QUERY_ROLE})
        if stray:
            wrong.append(f"policy {policy} on {table} applies to {stray}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-VDB-02", owasp="LLM08", atlas="AML.T0035, AML.M0005")
def test_vectordb_data_dir_private(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The data directory is on the vectors dataset, 0700 postgres, with nothing open to others."""
    datadir = _settings(host)["live"]["data_directory"][0]
    mount = next((m.path for m in lab.spec.nodes[node.name].mounts if m.dataset == "vectors"), None)
    wrong = []
    if mount is None or not datadir.startswith(mount.rstrip("/") + "/"):
        wrong.append(f"data_directory {datadir} is not on the vectors dataset mount {mount}")
    paths = [datadir] + ([mount] if mount else [])
    states = file_states(host, paths)
    wrong += mode_findings(states[datadir], mode=0o700, owner="postgres", group="postgres")
    if mount:
        wrong += mode_findings(states[mount], mode=0o750, owner="root", group="postgres")
    open_files = host.check_output("find %s -perm /o=rwx -print | head -n 5", datadir).split()
    if open_files:
        wrong.append(f"open to others under {datadir}: {open_files}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
