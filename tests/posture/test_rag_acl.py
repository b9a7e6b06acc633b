"""The RAG tables' access control, inside the database (OWASP LLM08): forced row-level
security keyed on the gateway-signed principal, a query role that reads and nothing else.

Every probe runs as postgres over the local socket with ``SET ROLE rag_query``, so it is
exactly the query role's view: crafted statements that a compromised RAG service could
send. A valid assertion is signed here with the operator's copy of the lab's signing key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from service_state import corpus_entries, secrets

from mlseclab.posture.plugin import PostureLab, PostureNode

pytestmark = pytest.mark.roles("vectordb")

QUERY_ROLE = "rag_query"
OWNER_ROLE = "rag_owner"
TABLES = ("sources", "chunks")
POLICIES = {f"{t}_{p}" for t in TABLES for p in ("query", "ingest")}
WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")


def _psql(host: Any, sql: str) -> Any:
    return host.run("runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d rag -c %s", sql)


def _as_query_role(host: Any, assertion: str | None, statement: str) -> tuple[bool, str]:
    """(ok, output or error) of one statement as rag_query in a transaction whose principal
    is ``assertion`` (None: not set). Assertions hold only [a-z0-9,|-]: safe to quote."""
    parts = ["BEGIN", f"SET LOCAL ROLE {QUERY_ROLE}"]
    if assertion is not None:
        parts.append(f"SELECT set_config('mlseclab.principal', '{assertion}', true)")
    parts += [statement, "ROLLBACK"]  # never keeps what a probe managed to change
    cmd = _psql(host, "; ".join(parts))
    out = cmd.stdout.strip().splitlines()
    return cmd.rc == 0, (out[-1] if out and cmd.rc == 0 else cmd.stderr.strip()[-300:])


def _assertion(key: str, client: str, groups: list[str], issued: int) -> str:
    payload = f"{client}|{','.join(groups)}|{issued}"
    return payload + "|" + hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


_STATE_SQL = """
SELECT json_build_object(
  'tables', (SELECT json_object_agg(c.relname, json_build_array(c.relrowsecurity,
                                                                c.relforcerowsecurity))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'rag' AND c.relname IN ('sources', 'chunks')),
  'policies', (SELECT coalesce(json_agg(policyname ORDER BY policyname), '[]')
               FROM pg_policies WHERE schemaname = 'rag' AND tablename IN ('sources', 'chunks')),
  'role', (SELECT json_build_array(rolsuper, rolbypassrls) FROM pg_roles
           WHERE rolname = 'rag_query'),
  'writes', (SELECT coalesce(json_agg(t || ':' || p), '[]')
             FROM unnest(ARRAY['rag.sources', 'rag.chunks']) t,
                  unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p
             WHERE has_table_privilege('rag_query', t, p)),
  'private', has_schema_privilege('rag_query', 'rag_private', 'USAGE'),
  'function', (SELECT json_build_array(p.prosecdef, pg_get_userbyid(p.proowner), p.proconfig)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = 'rag' AND p.proname = 'principal_groups'))
"""


@pytest.mark.control("MLSL-VDB-14", owasp="LLM08, LLM02", atlas="AML.T0036, AML.T0057, AML.M0019")
def test_rag_chunks_forced_rls_and_query_role_confined(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """FORCE ROW LEVEL SECURITY on the RAG tables, the role's policies only, a query role
    with SELECT only and no BYPASSRLS; and crafted statements as that role see only the
    signed principal's groups, fail without a valid assertion, and cannot write."""
    cmd = _psql(host, _STATE_SQL)
    assert cmd.rc == 0, f"{node.name}: psql failed: {cmd.stderr.strip()[-400:]}"
    state = json.loads(cmd.stdout)
    wrong = []
    for table in TABLES:
        flags = (state["tables"] or {}).get(table)
        if flags != [True, True]:
            wrong.append(f"rag.{table} row-level security (enabled, forced) is {flags}")
    if set(state["policies"]) != POLICIES:
        wrong.append(f"policies {state['policies']}, expected exactly {sorted(POLICIES)}")
    if state["role"] != [False, False]:
        wrong.append(f"{QUERY_ROLE} (superuser, bypassrls) is {state['role']}")
    if state["writes"]:
        wrong.append(f"{QUERY_ROLE} may write: {state['writes']}")
    if state["private"]:
        wrong.append(f"{QUERY_ROLE} may use schema rag_private (the signing key)")
    fn = state["function"] or [None, None, None]
    if (
        fn[0] is not True
        or fn[1] != OWNER_ROLE
        or not any(str(c).startswith("search_path=") for c in fn[2] or [])
    ):
        wrong.append(f"rag.principal_groups() (secdef, owner, config) is {fn}")
    # behaviour: what the query role can get with crafted statements
    key = secrets(lab).service("rag-signing-key").read_text(encoding="utf-8").strip()
    now = int(time.time())
    everyone = _assertion(key, "posture", ["everyone"], now)
    ok, out = _as_query_role(
        host,
        everyone,
        "SELECT count(*) || ',' || count(*) FILTER (WHERE NOT groups && '{everyone}')"
        " FROM rag.chunks WHERE true OR groups @> '{secops}'",
    )
    total, foreign = (int(x) for x in out.split(",")) if ok else (0, 0)
    if not ok:
        wrong.append(f"a valid assertion for [everyone] could not read: {out}")
    elif total == 0:
        wrong.append("a valid assertion for [everyone] reads no chunk at all (nothing to prove)")
    elif foreign:
        wrong.append(f"a valid assertion for [everyone] reads {foreign} chunks of other groups")
    forged = everyone.replace("|everyone|", "|everyone,secops|")
    stale = _assertion(key, "posture", ["secops"], now - 3600)
    wrong_key = _assertion("not-the-lab-key", "posture", ["secops"], now)
    for label, assertion in (
        ("no assertion", None),
        ("a forged assertion", forged),
        ("a stale assertion", stale),
        ("an assertion under another key", wrong_key),
    ):
        ok, out = _as_query_role(host, assertion, "SELECT count(*) FROM rag.chunks")
        if ok and out != "0":
            wrong.append(f"{label} reads {out} chunks")
    for statement in (
        "DELETE FROM rag.chunks",
        "UPDATE rag.sources SET groups = '{everyone}'",
        "SELECT count(*) FROM rag_private.signing_key",
        "SET LOCAL row_security = off; SELECT count(*) FROM rag.chunks",
    ):
        ok, out = _as_query_role(host, everyone, statement)
        if ok:
            wrong.append(f"as {QUERY_ROLE}, `{statement}` succeeded ({out})")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


_QUARANTINE_SQL = (
    "SELECT json_build_object('sources', (SELECT coalesce(json_object_agg(id, json_build_array("
    "status, sha256, chunks)), '{}') FROM rag.sources), 'chunked', (SELECT coalesce("
    "json_agg(DISTINCT document), '[]') FROM rag.chunks))"
)


@pytest.mark.control("MLSL-RAG-10", owasp="LLM01, LLM04", atlas="AML.T0051, AML.T0070, AML.T0071")
def test_rag_injected_documents_quarantined_not_indexed(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """Every corpus document the service's screen flags is quarantined with no chunk; every
    indexed document matches its manifest's sha256; nothing outside the manifest is indexed."""
    corpus, entries = corpus_entries(lab)
    from mlseclab_rag.normalise import normalise
    from mlseclab_rag.screen import screen

    flagged = set()
    for e in entries:
        n = normalise((corpus / e.path).read_text(encoding="utf-8"), e.kind or "text")
        if screen(n.text, n.invisible).flagged:
            flagged.add(e.id)
    cmd = _psql(host, _QUARANTINE_SQL)
    assert cmd.rc == 0, f"psql on {node.name} failed: {cmd.stderr.strip()[-300:]}"
    db = json.loads(cmd.stdout)
    sources, chunked = db["sources"], set(db["chunked"])
    by_id = {e.id: e for e in entries}
    wrong = []
    if not flagged:
        wrong.append("the corpus has no document the screen flags (nothing to prove)")
    for doc in sorted(flagged):
        status = sources.get(doc, ["absent"])[0]
        if status != "quarantined" or doc in chunked:
            chunks = "with" if doc in chunked else "without"
            wrong.append(f"{doc} carries an injection attempt but is {status}, {chunks} chunks")
    for doc in sorted(chunked):
        if doc not in by_id:
            wrong.append(f"{doc} is indexed but not in the manifest")
        elif sources.get(doc, ["", ""])[1] != by_id[doc].sha256 or doc in flagged:
            wrong.append(f"{doc} is indexed but not as the manifest pins it, or flagged")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
