"""Tampers for the RAG service's defences (test_rag.py's behavioural checks, test_rag_acl.py).

The format is tampers.py's (``str.format`` with ``{mgmt}`` and ``{service}``; literal
braces doubled). Settings edits back up settings.json first and restore it with
``cp -p``; the service is restarted and waited for on its app address both ways.
SQL tampers run as postgres on the vector database and are reverted statement by
statement; none of them deletes a row.
"""

from __future__ import annotations

if __package__:
    from .tampers import Tamper
    from .tampers_b import _backup, _nginx, _pg_sql, _restore, _wait_port
else:
    from tampers import Tamper
    from tampers_b import _backup, _nginx, _pg_sql, _restore, _wait_port

RAG_SETTINGS = "/etc/mlseclab/rag/settings.json"
RAG_QUERY_PASSWORD = "/etc/mlseclab/rag/credentials/db-query-password"
RAG_INGEST_PASSWORD = "/etc/mlseclab/rag/credentials/db-ingest-password"
RAG_RESTART = f"systemctl restart mlseclab-rag.service && {_wait_port('{service}', 8080)}"


def _settings(name: str, breaks: tuple[str, ...], edit: str) -> Tamper:
    return Tamper(
        name=name,
        node="rag-01",
        breaks=breaks,
        apply=f"{_backup(name, RAG_SETTINGS)} && sed -i {edit} {RAG_SETTINGS} && {RAG_RESTART}",
        revert=f"{_restore(name, RAG_SETTINGS)} && {RAG_RESTART}",
    )


ACL = "test_rag_chunks_forced_rls_and_query_role_confined"

TAMPERS: list[Tamper] = [
    _nginx(
        "gateway-embeddings-for-everyone",
        ("test_gateway_embeddings_only_for_clients_allowed_them",),
        "'s/if ($mlseclab_embeddings = 0)/if ($mlseclab_embeddings = 2)/'",
    ),
    # the client's own principal header reaches the RAG node (which still checks its HMAC)
    _nginx(
        "gateway-principal-passthrough",
        ("test_gateway_signs_the_rag_principal_over_mutual_tls",),
        "'s/\\(X-Mlseclab-Principal\\) $mlseclab_principal/\\1 $http_x_mlseclab_principal/'",
    ),
    # any lab certificate of a node named rag-01 now passes for the gateway's
    _settings(
        "rag-gateway-names-widened",
        ("test_rag_refuses_requests_that_bypass_the_gateway",),
        '\'s/"gateway_names": \\[/"gateway_names": ["rag-01",/\'',
    ),
    _settings(
        "rag-canary-filter-off",
        ("test_rag_canary_never_reaches_a_caller_outside_its_groups",),
        '\'s/"canary_filter": true/"canary_filter": false/\'',
    ),
    # the service queries as the ingest role, whose policy reads every row
    Tamper(
        name="rag-queries-as-ingest-role",
        node="rag-01",
        breaks=("test_rag_answers_cite_only_the_callers_groups",),
        apply=(
            f"{_backup('rag-queries-as-ingest-role', RAG_SETTINGS)} && "
            f"{_backup('rag-queries-as-ingest-role-pw', RAG_QUERY_PASSWORD)} && "
            f"cp {RAG_INGEST_PASSWORD} {RAG_QUERY_PASSWORD} && "
            f'sed -i \'s/"user": "rag_query"/"user": "rag_ingest"/\' {RAG_SETTINGS} && '
            f"{RAG_RESTART}"
        ),
        revert=(
            f"{_restore('rag-queries-as-ingest-role', RAG_SETTINGS)} && "
            f"{_restore('rag-queries-as-ingest-role-pw', RAG_QUERY_PASSWORD)} && {RAG_RESTART}"
        ),
    ),
    _pg_sql(
        "rag-chunks-rls-disabled",
        (ACL,),
        "ALTER TABLE rag.chunks DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE rag.chunks ENABLE ROW LEVEL SECURITY",
    ),
    _pg_sql(
        "rag-chunks-rls-not-forced",
        (ACL,),
        "ALTER TABLE rag.chunks NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE rag.chunks FORCE ROW LEVEL SECURITY",
    ),
    _pg_sql(
        "rag-query-role-bypassrls",
        (ACL,),
        "ALTER ROLE rag_query BYPASSRLS",
        "ALTER ROLE rag_query NOBYPASSRLS",
    ),
    _pg_sql(
        "rag-query-role-can-write",
        (ACL,),
        "GRANT INSERT, UPDATE, DELETE ON rag.chunks TO rag_query",
        "REVOKE INSERT, UPDATE, DELETE ON rag.chunks FROM rag_query",
    ),
    _pg_sql(
        "rag-policy-widened",
        (ACL,),
        "CREATE POLICY chunks_tamper ON rag.chunks FOR SELECT TO rag_query USING (true)",
        "DROP POLICY chunks_tamper ON rag.chunks",
    ),
    _pg_sql(
        "rag-quarantine-lifted",
        ("test_rag_injected_documents_quarantined_not_indexed",),
        "UPDATE rag.sources SET status = 'indexed', reason = 'tamper:' || reason"
        " WHERE status = 'quarantined'",
        "UPDATE rag.sources SET status = 'quarantined', reason = substr(reason, 8)"
        " WHERE reason LIKE 'tamper:%'",
    ),
]
