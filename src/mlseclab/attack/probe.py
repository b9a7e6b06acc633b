"""The attacker's hands: one stdlib-only program run where the attacker stands.

It is sent, with its job appended as a literal, on the standard input of
``python3 -I -``: in the edge client's namespace on the host, or on a node
assumed compromised (as the service's own user, with the service's own
credentials). Nothing secret is ever in an argument vector. It prints one JSON
document: the outcome of every action, nothing interpreted. Every action is
bounded: a count, a timeout, a thread pool of at most ``MAX_WORKERS``.

Only what the standard library has (and ``psycopg`` for the SQL action, which a
RAG node has) may be imported here: this file runs on the nodes' Python.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import ssl
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MAX_WORKERS = 16


#: what the kernel said, for an attempt that got no answer at all
ERRNO_STATES = {
    errno.ENETUNREACH: "no-route",
    errno.EHOSTUNREACH: "no-route",
    errno.EPERM: "denied-locally",  # the node's own firewall (nftables output chain)
    errno.EACCES: "denied-locally",
}


def _os_error(exc: OSError) -> dict[str, str]:
    return {"state": ERRNO_STATES.get(exc.errno or 0, "error"), "error": exc.strerror or str(exc)}


def tcp_connect(address: str, port: int, timeout: float) -> dict[str, Any]:
    """open (and the first bytes the server sent, e.g. an SSH banner), refused, filtered, ..."""
    started = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    out: dict[str, Any] = {"address": address, "port": port}
    try:
        s.connect((address, port))
        out["state"] = "open"
        try:
            s.settimeout(0.5)
            out["banner"] = s.recv(64).decode("ascii", "replace")
        except OSError:
            out["banner"] = ""
    except TimeoutError:
        out["state"] = "filtered"
    except ConnectionRefusedError:
        out["state"] = "refused"
    except OSError as exc:
        out.update(_os_error(exc))
    finally:
        s.close()
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def dns_query(address: str, name: str, timeout: float) -> dict[str, Any]:
    """One A query for ``name`` to ``address``:53 over UDP: answered, or why not."""
    qid = secrets.randbelow(65536)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        packet += bytes([len(label)]) + label.encode("ascii")
    packet += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    out: dict[str, Any] = {"address": address, "port": 53, "name": name}
    try:
        s.sendto(packet, (address, 53))
        s.recvfrom(512)
        out["state"] = "answered"
    except TimeoutError:
        out["state"] = "no-answer"
    except ConnectionRefusedError:
        out["state"] = "refused"
    except OSError as exc:
        out.update(_os_error(exc))
    finally:
        s.close()
    return out


def https_request(spec: dict[str, Any], ca_pem: str, timeout: float) -> dict[str, Any]:
    """One HTTP/1.1 request over TLS (the lab CA), raw: the path is sent exactly as given."""
    import http.client

    tls = ssl.create_default_context(cadata=ca_pem)
    tls.check_hostname = False  # addressed by IP; the chain is still verified
    started = time.monotonic()
    conn = http.client.HTTPSConnection(
        spec["address"], spec.get("port", 443), timeout=timeout, context=tls
    )
    body = spec.get("body")
    data = json.dumps(body).encode() if body is not None else None
    headers = dict(spec.get("headers", {}))
    if data is not None:
        headers["Content-Type"] = "application/json"
    out: dict[str, Any] = {"method": spec.get("method", "GET"), "path": spec["path"]}
    try:
        conn.putrequest(out["method"], spec["path"], skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        r = conn.getresponse()
        payload = r.read(4096)
        out["status"] = r.status
        out["bytes"] = len(payload)
        out["body"] = payload[:160].decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        out["status"] = 0
        out["error"] = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        conn.close()
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def _credential(name: str) -> str:
    return (Path(os.environ.get("CREDENTIALS_DIRECTORY", "")) / name).read_text("utf-8").strip()


def _conninfo(spec: dict[str, Any]) -> str:
    import psycopg  # type: ignore[import-not-found,unused-ignore]

    db = json.loads(Path(spec["settings_file"]).read_text("utf-8"))["vectordb"]  # the service's
    return str(
        psycopg.conninfo.make_conninfo(
            host=db["host"],
            port=db["port"],
            dbname=db["dbname"],
            user=db["user"],
            password=_credential(spec["password_credential"]),
            sslmode=db.get("sslmode", "verify-full"),
            sslrootcert=db["sslrootcert"],
            connect_timeout=10,
            application_name="mlseclab-attack",
        )
    )


def sql_statements(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Each statement in its own transaction as the service's role: rows, or the refusal."""
    import psycopg  # type: ignore[import-not-found,unused-ignore]  # a RAG node has python3-psycopg

    conninfo = _conninfo(spec)
    results = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in spec["statements"]:
            out: dict[str, Any] = {"name": statement["name"]}
            try:
                with conn.transaction():
                    for setup in statement.get("setup", []):
                        conn.execute(setup[0], setup[1:] or None)
                    cur = conn.execute(statement["sql"])
                    rows = cur.fetchall() if cur.description else []
                    out["state"] = "allowed"
                    out["rows"] = [[str(v) for v in row] for row in rows[:5]]
                    out["rowcount"] = cur.rowcount
            except psycopg.Error as exc:
                out["state"] = "refused"
                out["sqlstate"] = exc.sqlstate or ""
                out["error"] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            results.append(out)
    return results


def forged_read(spec: dict[str, Any]) -> int | None:
    """Restricted chunks read under a principal signed with a key the service holds, if any."""
    import hashlib
    import hmac

    import psycopg  # type: ignore[import-not-found,unused-ignore]

    name = spec.get("forge_with_credential")
    if not name or not (Path(os.environ.get("CREDENTIALS_DIRECTORY", "")) / name).is_file():
        return None
    key = _credential(name)
    payload = f"operator|everyone,secops|{int(time.time())}"
    mac = hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()
    with psycopg.connect(_conninfo(spec)) as conn:
        conn.execute("SELECT set_config('mlseclab.principal', %s, true)", (f"{payload}|{mac}",))
        row = conn.execute(
            "SELECT count(*) FROM rag.chunks WHERE collection = 'restricted'"
        ).fetchone()
    return int(row[0]) if row else 0


def main(job: dict[str, Any]) -> dict[str, Any]:
    timeout = float(job.get("timeout", 1.0))
    workers = min(MAX_WORKERS, int(job.get("workers", 8)))
    started = time.time()
    result: dict[str, Any] = {"started": started}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if job.get("tcp"):
            result["tcp"] = list(pool.map(lambda t: tcp_connect(t[0], t[1], timeout), job["tcp"]))
        if job.get("dns"):
            result["dns"] = list(pool.map(lambda d: dns_query(d[0], d[1], timeout), job["dns"]))
        if job.get("https"):
            ca = job["ca_pem"]
            result["https"] = list(
                pool.map(
                    lambda r: https_request(r, ca, float(job.get("http_timeout", 30))), job["https"]
                )
            )
    if job.get("sql"):
        try:
            result["sql"] = sql_statements(job["sql"])
            result["forged_rows"] = forged_read(job["sql"])
        except Exception as exc:  # reported: the caller decides
            result["sql_error"] = f"{type(exc).__name__}: {exc}"[:300]
    result["finished"] = time.time()
    return result
