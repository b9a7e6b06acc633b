"""The RAG service from the operator's host: rag query (through the gateway), ingest, status.

``query`` talks to the gateway over the uplink with the client's key from the lab's
secrets (never printed), exactly as a client would: the gateway authenticates the key
and signs the principal; nothing here can speak for a client without its key.
``ingest`` and ``status`` run the service's own CLI on the RAG node over the lab's SSH.
"""

from __future__ import annotations

import argparse
import json
import shlex
import ssl
import subprocess
import urllib.error
import urllib.request
from typing import Any

from rich.table import Table

from mlseclab import ui
from mlseclab.commands.common import Context, load_context
from mlseclab.errors import ERROR, FINDINGS, OK, LabError
from mlseclab.process import ssh
from mlseclab.secrets import paths
from mlseclab.spec import Role

QUERY_PATH = "/v1/rag/query"
INGEST_UNIT = "mlseclab-rag-ingest.service"
INGEST_REPORT = "/var/lib/mlseclab-rag/ingest-report.json"
APP = "/opt/mlseclab/rag/bin/mlseclab-rag"
TIMEOUT = 600


def _node_of(ctx: Context, role: Role) -> str:
    nodes = [name for name, node in ctx.spec.nodes.items() if node.role is role]
    if not nodes:
        raise LabError(f"lab {ctx.spec.lab.name} has no {role} node")
    if not ctx.home.ssh_config.exists():
        raise LabError(f"lab {ctx.spec.lab.name} is not up: run `mlseclab up` first")
    return nodes[0]


def _ssh(ctx: Context, node: str, command: str) -> subprocess.CompletedProcess[str]:
    ctx.home.ensure_control_dir()
    return ssh(ctx.home.ssh_config, node, command, timeout=TIMEOUT)


def query(ctx: Context, client: str, question: str, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """POST the question to the gateway as ``client``: (HTTP status, the JSON answer)."""
    if client not in ctx.spec.clients:
        declared = ", ".join(sorted(ctx.spec.clients)) or "(none)"
        raise LabError(f"unknown client {client!r}; the spec's clients: {declared}")
    secrets = paths(ctx.home)
    key_file = secrets.client_key(client)
    if not key_file.is_file():
        raise LabError(f"no key for client {client} ({key_file}): run `mlseclab up` first")
    gateway = ctx.topology.nodes[_node_of(ctx, Role.GATEWAY)]
    address = gateway.service[0].ip if gateway.service else gateway.mgmt.ip
    tls = ssl.create_default_context(cafile=str(secrets.ca_cert))
    request = urllib.request.Request(
        f"https://{address}{QUERY_PATH}",
        data=json.dumps({"question": question}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer " + key_file.read_text(encoding="utf-8").strip(),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, context=tls, timeout=timeout) as r:  # noqa: S310
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body or b"{}")
        except ValueError:
            return err.code, {"error": {"message": body.decode(errors="replace")[:200]}}
    except (urllib.error.URLError, OSError) as exc:
        raise LabError(f"the gateway at {address} did not answer: {exc}") from None


def _rag_query(ctx: Context, args: argparse.Namespace) -> int:
    status, body = query(ctx, args.client, args.question)
    if args.json:
        ui.out.print_json(json.dumps({"status": status, **body}))
        return OK if status == 200 else FINDINGS if status == 451 else ERROR
    if status != 200:
        message = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
        ui.error(f"{args.client}: HTTP {status}: {message}")
        return FINDINGS if status == 451 else ERROR
    ui.out.print(ui.esc(body.get("answer", "")))
    table = Table(title="citations", title_justify="left")
    for col in ("document", "collection", "chunk", "score"):
        table.add_column(col, justify="right" if col in ("chunk", "score") else "left")
    for c in body.get("citations", []):
        table.add_row(
            ui.esc(c["document"]), ui.esc(c["collection"]), str(c["chunk"]), f"{c['score']:.3f}"
        )
    ui.out.print(table)
    t = body.get("timings", {})
    ui.plain(f"retrieval {t.get('retrieval_ms')} ms, generation {t.get('generation_ms')} ms")
    return OK


def _remote_json(ctx: Context, node: str, command: str) -> Any:
    done = _ssh(ctx, node, command)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabError(f"{node}: `{command}` failed (exit {done.returncode}): {tail}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise LabError(f"{node}: `{command}` did not print JSON") from None


def _show_report(report: dict[str, Any]) -> None:
    ui.plain(
        f"{report['documents']} documents: {len(report['indexed'])} indexed "
        f"({report['chunks_written']} chunks), {len(report['unchanged'])} unchanged, "
        f"{len(report['removed'])} removed in {report['seconds']} s"
    )
    for q in report["quarantined"]:
        ui.warn(f"quarantined {q['id']}: {'; '.join(q['reasons'])}")
    for r in report["refused"]:
        ui.warn(f"refused {r['id']}: {r['reason']}")
    for name in report.get("unlisted", []):
        ui.warn(f"not in the manifest, not ingested: {name}")


def _rag_ingest(ctx: Context, args: argparse.Namespace) -> int:
    node = _node_of(ctx, Role.RAG)
    command = f"sudo systemctl start {INGEST_UNIT} && sudo cat {shlex.quote(INGEST_REPORT)}"
    report = _remote_json(ctx, node, command)
    if args.json:
        ui.out.print_json(json.dumps(report))
    else:
        _show_report(report)
    return OK


def _rag_status(ctx: Context, args: argparse.Namespace) -> int:
    node = _node_of(ctx, Role.RAG)
    status = _remote_json(ctx, node, f"sudo {APP} status")
    if args.json:
        ui.out.print_json(json.dumps(status))
        return OK
    bad = False
    for unit, s in status["units"].items():
        ui.plain(f"{unit}: {s['active']} {s['result']}".rstrip())
    service = status["units"].get("mlseclab-rag.service", {})
    bad = service.get("active") != "active"
    if status.get("last_ingest"):
        ui.plain(f"last ingest {status['last_ingest'].get('finished', '')}:")
        _show_report(status["last_ingest"])
    else:
        ui.warn("no ingest has run yet (`mlseclab rag ingest`)")
    return ERROR if bad else OK


def cmd_rag(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    handler = {"query": _rag_query, "ingest": _rag_ingest, "status": _rag_status}[args.rag_command]
    return handler(ctx, args)
