"""The router's drop counters for Prometheus: a small HTTP exporter inside the router namespace.

The lab's router (a network namespace on the operator's host) holds the inter-segment
policy, so it is the one place that sees a scan from the edge or a segment probing
another. This exporter serves its nftables drop counters, by chain and by the segment
the packet came in on, on the router's management address; the observability node
scrapes it like a node exporter (the router's input chain admits the scrape from the
observability node's management address only).

The file's source runs with the host's ``/usr/bin/python3 -I -c`` (standard library only;
given as source, so a checkout that ``nobody`` cannot read still works), as ``nobody``
with CAP_NET_ADMIN alone (nftables needs it to list a table's counters): :func:`command`
builds that command line and :func:`serve` is its body. The import-time
part is shared with the orchestrator, which renders the comments the counters are
found by.
"""

from __future__ import annotations

import argparse
import http.server
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: a drop counter's comment in the router ruleset: ``dropped from <segment>: <why>``
DROP_COMMENT = re.compile(r"^dropped from (?P<segment>[a-z0-9-]+): ")
#: the ingress "segment" of the operator's uplink
OPERATOR_SEGMENT = "operator"
METRICS_PORT = 9100
NOBODY = 65534


def drops(ruleset: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    """``(chain, segment)`` -> (packets, bytes) of every ``dropped from`` counter."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        m = DROP_COMMENT.match(str(rule.get("comment", "")))
        if not m:
            continue
        for e in rule.get("expr", []):
            if "counter" in e:
                key = (str(rule.get("chain", "")), m.group("segment"))
                p, b = out.get(key, (0, 0))
                out[key] = (p + int(e["counter"]["packets"]), b + int(e["counter"]["bytes"]))
    return out


def exposition(counters: dict[tuple[str, str], tuple[int, int]], up: bool) -> str:
    """Prometheus text format (chain and segment names are nftables words: no quoting)."""
    lines = [
        "# HELP mlseclab_router_up 1 when the router's table could be read",
        "# TYPE mlseclab_router_up gauge",
        f"mlseclab_router_up {1 if up else 0}",
        "# HELP mlseclab_router_dropped_packets_total Packets the lab router dropped, "
        "by chain and ingress segment",
        "# TYPE mlseclab_router_dropped_packets_total counter",
    ]
    for (chain, seg), (packets, _) in sorted(counters.items()):
        lines.append(
            f'mlseclab_router_dropped_packets_total{{chain="{chain}",segment="{seg}"}} {packets}'
        )
    lines += [
        "# HELP mlseclab_router_dropped_bytes_total Bytes the lab router dropped",
        "# TYPE mlseclab_router_dropped_bytes_total counter",
    ]
    for (chain, seg), (_, nbytes) in sorted(counters.items()):
        lines.append(
            f'mlseclab_router_dropped_bytes_total{{chain="{chain}",segment="{seg}"}} {nbytes}'
        )
    return "\n".join(lines) + "\n"


def read_table(table: str) -> tuple[dict[tuple[str, str], tuple[int, int]], bool]:
    done = subprocess.run(
        ["nft", "-j", "list", "table", "inet", table],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        return {}, False
    try:
        return drops(json.loads(done.stdout)), True
    except (ValueError, KeyError, TypeError):
        return {}, False


def serve(address: str, port: int, table: str) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "mlseclab-router-metrics"
        sys_version = ""

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = exposition(*read_table(table)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # one scrape every few seconds: nothing worth a log line

    httpd = http.server.ThreadingHTTPServer((address, port), Handler)
    httpd.serve_forever()


#: the first argument of the exporter's command line: how the orchestrator finds it
MARKER = "mlseclab-router-metrics"


def command(
    lab: str, router_ns: str, address: str, table: str, port: int = METRICS_PORT
) -> list[str]:
    """The exporter inside the router namespace, as nobody with CAP_NET_ADMIN only; the
    marker and ``--lab=`` arguments are how the orchestrator finds it again."""
    return [
        "ip",
        "netns",
        "exec",
        router_ns,
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=-all,+net_admin",
        "--ambient-caps=-all,+net_admin",
        "--bounding-set=-all,+net_admin",
        "--no-new-privs",
        "/usr/bin/python3",
        "-I",
        "-c",
        Path(__file__).read_text(encoding="utf-8"),
        MARKER,
        f"--lab={lab}",
        "--listen",
        address,
        "--port",
        str(port),
        "--table",
        table,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--port", type=int, default=METRICS_PORT)
    p.add_argument("--table", required=True)
    p.add_argument("--lab", required=True, help="the lab's name (how up and down find it)")
    args = p.parse_args(sys.argv[2:] if argv is None else argv)
    serve(args.listen, args.port, args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
