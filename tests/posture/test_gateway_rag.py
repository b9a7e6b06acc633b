"""The gateway's side of the RAG service and of embeddings, per client key.

Live: requests from the operator's host to the gateway's edge address as each client
of the spec. Persisted: ``nginx -T``, the configuration nginx loaded.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import nginx_config
import pytest
from service_state import secrets, service_address

from mlseclab.posture.plugin import PostureLab, PostureNode, not_applicable

pytestmark = pytest.mark.roles("gateway")

PRINCIPAL_HEADER = "x-mlseclab-principal"
RAG_PREFIX = "/v1/rag/"


def _post(node: PostureNode, lab: PostureLab, path: str, client: str, body: Any) -> int:
    key = secrets(lab).client_key(client).read_text(encoding="utf-8").strip()
    req = urllib.request.Request(
        f"https://{service_address(node)}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    ctx = ssl.create_default_context(cafile=str(secrets(lab).ca_cert))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=120) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.mark.control("MLSL-GW-08", owasp="LLM08, LLM02", atlas="AML.T0024, AML.M0019")
def test_gateway_embeddings_only_for_clients_allowed_them(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """/v1/embeddings answers 403 to every client the spec does not allow embeddings, and
    serves the ones it does (embeddings can be inverted into what they encode)."""
    if not lab.spec.clients:
        not_applicable("the spec declares no clients")
    model = next((n for n, m in lab.spec.models.items() if m.task == "embedding"), "")
    wrong = []
    for client, declared in sorted(lab.spec.clients.items()):
        status = _post(node, lab, "/v1/embeddings", client, {"model": model, "input": ["x"]})
        if declared.embeddings and status != 200:
            wrong.append(f"{client} (embeddings: true) got {status}, expected 200")
        if not declared.embeddings and status != 403:
            wrong.append(f"{client} (embeddings: false) got {status}, expected 403")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _headers(location: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in location.children("proxy_set_header"):
        out[d.args[0].lower()] = d.args[1:]
    return out


@pytest.mark.control("MLSL-GW-07", owasp="LLM08", atlas="AML.T0055, AML.T0012")
def test_gateway_signs_the_rag_principal_over_mutual_tls(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """The RAG route goes over TLS with the gateway's certificate, verifies the RAG node,
    sends the njs-signed principal and never the client's key; every other route strips
    a principal header a client sent."""
    conf = nginx_config.read(host)
    assert conf.ok, f"nginx -T fails on {node.name}: {conf.error}"
    locations = [d for s in conf.servers() for d in s.children("location")]
    proxied = [d for d in locations if d.children("proxy_pass")]
    rag = [d for d in proxied if d.args[-1].startswith(RAG_PREFIX)]
    wrong = []
    if not rag:
        wrong.append(f"no location proxies {RAG_PREFIX}")
    for loc in rag:
        single = {
            name: [d.args for d in loc.children(name)]
            for name in (
                "proxy_pass",
                "proxy_ssl_certificate",
                "proxy_ssl_certificate_key",
                "proxy_ssl_verify",
                "proxy_ssl_trusted_certificate",
            )
        }
        if not single["proxy_pass"][0][0].startswith("https://"):
            wrong.append(f"`{loc}` proxies over {single['proxy_pass'][0][0]}, not https")
        for name in ("proxy_ssl_certificate", "proxy_ssl_certificate_key"):
            if not single[name]:
                wrong.append(f"`{loc}` presents no client certificate ({name})")
        if single["proxy_ssl_verify"] != [["on"]] or not single["proxy_ssl_trusted_certificate"]:
            wrong.append(f"`{loc}` does not verify the RAG node's certificate")
        headers = _headers(loc)
        if headers.get(PRINCIPAL_HEADER) != ["$mlseclab_principal"]:
            wrong.append(
                f"`{loc}` sends {PRINCIPAL_HEADER} {headers.get(PRINCIPAL_HEADER)}, "
                "expected the signed $mlseclab_principal"
            )
        if headers.get("authorization") not in ([""], ['""']):
            wrong.append(
                f"`{loc}` passes the client's Authorization on ({headers.get('authorization')})"
            )
    for loc in proxied:
        if loc in rag:
            continue
        if _headers(loc).get(PRINCIPAL_HEADER) not in ([""], ['""']):
            wrong.append(f"`{loc}` passes a client's {PRINCIPAL_HEADER} upstream")
    signing = host.run("stat -c '%a %U' /etc/nginx/mlseclab/rag-signing.json").stdout.split()
    if signing != ["600", "root"]:
        wrong.append(f"/etc/nginx/mlseclab/rag-signing.json is {signing}, expected 600 root")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
