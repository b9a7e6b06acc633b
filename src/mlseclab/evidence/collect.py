"""What goes into an evidence archive, and how it is gathered without changing the lab.

From each node, over the lab's SSH (one ControlMaster connection per node, nodes in
parallel), read-only commands only: the node's clock and identity, its journal since
``--since`` (JSON, cut at :data:`JOURNAL_LIMIT`), the nftables ruleset with its counters,
processes, listeners, failed units, logins. Each command's output is cut at a byte limit
on the node (``head -c``), and the cut is recorded.

From the operator's host (local target): the router namespace's ruleset with counters,
each model file's sha256 against the spec's pin, a sha256 listing of each dataset
(files above :data:`DATASET_FILE_LIMIT` are listed as skipped, not hashed), the newest
verify, drift and attack reports of the lab, the recent dataset snapshots with their
manifests, and the spec.

Secrets are never read: a path :func:`mlseclab.evidence.archive.secret_reason` names
is listed in ``evidence.json`` under ``excluded`` with the reason, and neither hashed
nor copied. The lab's state directory (keys, secrets, credentials) is never walked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlseclab import __version__
from mlseclab.context import Context
from mlseclab.digest import sha256_file
from mlseclab.errors import LabError
from mlseclab.evidence.archive import (
    FORMAT,
    SECRET_DIRS,
    member_path_ok,
    secret_reason,
    sha256sum_line,
)
from mlseclab.process import run, ssh_bytes

#: bytes of one node's journal kept (JSON, one entry a line; cut at a line end)
JOURNAL_LIMIT = 16 * 1024 * 1024
#: bytes kept of any other command's output
OUTPUT_LIMIT = 4 * 1024 * 1024
#: dataset files larger than this are listed as skipped, not hashed (model files are
#: hashed for their pins anyway, whatever their size)
DATASET_FILE_LIMIT = 64 * 1024 * 1024
#: bytes hashed per dataset at most; files beyond it are listed as skipped
DATASET_BYTES_BUDGET = 2 * 1024 * 1024 * 1024
#: entries listed per dataset at most
DATASET_FILES_LIMIT = 100_000
#: report files larger than this are not copied
REPORT_FILE_LIMIT = 16 * 1024 * 1024
#: snapshots listed per dataset (the newest)
RECENT_SNAPSHOTS = 10
#: the report kinds whose newest folder is copied
REPORT_KINDS = ("verify", "drift", "attack")
#: a report folder: ``20261206-041500``, ``...-drift``, ``...-verify-2``
REPORT_DIR = re.compile(r"^(\d{8}-\d{6})(?:-([a-z]+))?(?:-(\d+))?$")
#: how the wrapper on the node reports the command's own exit status (on stderr)
EXIT_MARK = b"mlseclab-exit="

OK, TRUNCATED, SKIPPED, ERROR = "ok", "truncated", "skipped", "error"


@dataclass(frozen=True)
class NodeCommand:
    """One read-only command run on every node; its output is ``nodes/<node>/<file>``."""

    file: str
    what: str
    command: str
    limit: int = OUTPUT_LIMIT
    timeout: float = 120


def node_commands(since: dt.datetime) -> tuple[NodeCommand, ...]:
    """What each node is asked, in order; the first also tells whether it answers."""
    at = f"@{int(since.timestamp())}"
    logins = (
        "if command -v last >/dev/null 2>&1; then last -F -w -n 200; "
        "elif command -v wtmpdb >/dev/null 2>&1; then wtmpdb last -n 200; "
        "else echo '# no last or wtmpdb on this node'; fi; "
        "echo '# who -a'; who -a; "
        f"echo '# sshd and sudo in the journal since {since:%Y-%m-%d %H:%M:%S} UTC'; "
        f"sudo -n journalctl --no-pager -q -o short-iso-precise --since {at} "
        "SYSLOG_IDENTIFIER=sshd SYSLOG_IDENTIFIER=sshd-session SYSLOG_IDENTIFIER=sudo"
    )
    return (
        NodeCommand(
            "node.txt",
            "clock and identity",
            "date -u +%Y-%m-%dT%H:%M:%S.%NZ; hostname; cat /etc/machine-id; uptime; uname -a",
            timeout=30,
        ),
        NodeCommand(
            "journal.jsonl",
            f"journal since {since:%Y-%m-%d %H:%M:%S} UTC",
            f"sudo -n journalctl --no-pager -q -o json --since {at}",
            JOURNAL_LIMIT,
            timeout=300,
        ),
        NodeCommand(
            "nft-ruleset.json", "firewall ruleset with counters", "sudo -n nft -j list ruleset"
        ),
        NodeCommand(
            "processes.txt",
            "processes (user, pid, start time, command)",
            "sudo -n ps -eww -o user:32,pid,ppid,lstart,stat,args",
        ),
        NodeCommand("listeners.txt", "listening sockets", "sudo -n ss -tulpn"),
        NodeCommand(
            "failed-units.txt",
            "failed units",
            "systemctl list-units --failed --all --no-pager --plain --full",
        ),
        NodeCommand("logins.txt", "logins (last, who, sshd and sudo)", logins),
    )


def bounded(command: str, limit: int) -> str:
    """``command`` with its stdout cut at ``limit`` + 1 bytes on the node (so a cut shows)
    and its exit status written to stderr after :data:`EXIT_MARK`."""
    return f'{{ {command}; echo "{EXIT_MARK.decode()}$?" >&2; }} | head -c {limit + 1}'


@dataclass
class Item:
    """One thing collected (or not), as evidence.json lists it."""

    path: str  # member path under the archive's top; "" when nothing was written
    source: str  # a node's name, or "host"
    what: str
    command: str = ""
    status: str = OK  # ok | truncated | skipped | error
    error: str = ""
    note: str = ""
    bytes: int = 0
    sha256: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "source": self.source,
            "what": self.what,
            "status": self.status,
        }
        for key in ("command", "error", "note", "sha256"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.path:
            out["bytes"] = self.bytes
        if self.seconds:
            out["seconds"] = round(self.seconds, 2)
        return out


@dataclass
class Piece:
    """An item and the bytes that go into the archive for it (None: nothing)."""

    item: Item
    data: bytes | None = None


@dataclass
class NodeEvidence:
    node: str
    answered: bool = True
    error: str = ""
    seconds: float = 0.0
    pieces: list[Piece] = field(default_factory=list)


@dataclass
class HostEvidence:
    pieces: list[Piece] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _tail(data: bytes, lines: int = 3) -> str:
    text = data.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:])[:500] if text else "no output"


def _exit_status(stderr: bytes) -> tuple[int | None, bytes]:
    """The command's exit status that :func:`bounded` wrote, and stderr without it."""
    code: int | None = None
    rest: list[bytes] = []
    for line in stderr.splitlines():
        if line.startswith(EXIT_MARK) and line[len(EXIT_MARK) :].isdigit():
            code = int(line[len(EXIT_MARK) :])
        else:
            rest.append(line)
    return code, b"\n".join(rest)


def run_on_node(ssh_config: Path, node: str, cmd: NodeCommand) -> tuple[Piece, bool]:
    """Run ``cmd`` on ``node``; the piece, and whether the node answered at all."""
    path = f"nodes/{node}/{cmd.file}"
    item = Item(path=path, source=node, what=cmd.what, command=cmd.command)
    started = time.monotonic()
    try:
        done = ssh_bytes(ssh_config, node, bounded(cmd.command, cmd.limit), timeout=cmd.timeout)
    except LabError as exc:
        item.path, item.status, item.error = "", ERROR, " ".join(exc.lines)
        return Piece(item), True
    finally:
        item.seconds = time.monotonic() - started
    code, stderr = _exit_status(done.stderr)
    if code is None:
        item.path, item.status = "", ERROR
        item.error = f"ssh exit {done.returncode}: {_tail(stderr)}"
        return Piece(item), done.returncode != 255
    data = done.stdout
    if len(data) > cmd.limit:
        data = data[: cmd.limit]
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else data
        item.status = TRUNCATED
        item.note = f"cut at {len(data)} bytes (the limit is {cmd.limit}); the rest was not read"
    elif code != 0:
        item.status = ERROR
        item.error = f"exit {code}: {_tail(stderr)}"
        if not data:
            item.path = ""
            return Piece(item), True
    return Piece(item, data), True


def collect_node(ssh_config: Path, node: str, since: dt.datetime) -> NodeEvidence:
    """Every :func:`node_commands` on ``node``; a node that does not answer the first
    (ssh cannot reach it, or it hangs past its timeout) is recorded as such, and nothing
    more is tried on it."""
    started = time.monotonic()
    found = NodeEvidence(node)
    for cmd in node_commands(since):
        if not found.answered:
            found.pieces.append(
                Piece(
                    Item(
                        "",
                        node,
                        cmd.what,
                        cmd.command,
                        ERROR,
                        f"not collected: {node} did not answer over SSH",
                    )
                )
            )
            continue
        piece, answered = run_on_node(ssh_config, node, cmd)
        found.pieces.append(piece)
        if not found.pieces[1:] and piece.data is None:
            answered = False  # the first, cheapest command timed out or failed: stop here
        if not answered:
            found.answered = False
            found.error = f"{node} did not answer over SSH: {piece.item.error}"
    found.seconds = time.monotonic() - started
    return found


# -- the host ----------------------------------------------------------------------


def _read_plain(path: Path, limit: int) -> bytes:
    """A regular file's bytes, never through a symlink; at most ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return fh.read(limit)


def _walk(root: Path) -> Iterator[tuple[str, Path, os.stat_result | None, str]]:
    """(relative path, path, lstat, error) of every entry under ``root``, sorted, never
    following a link; a directory a secret lives in is given once with its name and
    not entered (``lstat`` None, error "secret-dir")."""
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
        base = Path(dirpath)
        rel_base = base.relative_to(root).as_posix()
        rel_base = "" if rel_base == "." else f"{rel_base}/"
        keep = []
        for d in sorted(dirnames):
            p = base / d
            if d.lower() in SECRET_DIRS:
                yield f"{rel_base}{d}/", p, None, "secret-dir"
            elif p.is_symlink():
                yield f"{rel_base}{d}", p, p.lstat(), ""
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = base / f
            try:
                yield f"{rel_base}{f}", p, p.lstat(), ""
            except OSError as exc:
                yield f"{rel_base}{f}", p, None, str(exc)
    for failed in errors:
        where = str(failed.filename or root)
        yield where, Path(where), None, str(failed)


def dataset_listing(
    name: str,
    root: Path,
    known: dict[Path, str],
    *,
    file_limit: int | None = None,
    budget: int | None = None,
    max_files: int | None = None,
) -> tuple[bytes, dict[str, Any], list[dict[str, str]]]:
    """A sha256sum listing of ``root`` (paths relative to it), what was skipped and why,
    and what was excluded as secret. ``known`` holds digests computed already (model
    files for their pins): they are used, whatever their size. The limits default to
    :data:`DATASET_FILE_LIMIT`, :data:`DATASET_BYTES_BUDGET`, :data:`DATASET_FILES_LIMIT`."""
    file_limit = DATASET_FILE_LIMIT if file_limit is None else file_limit
    budget = DATASET_BYTES_BUDGET if budget is None else budget
    max_files = DATASET_FILES_LIMIT if max_files is None else max_files
    lines: list[bytes] = []
    skipped: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    hashed = files = 0
    for rel, path, st, error in _walk(root):
        if error == "secret-dir":
            excluded.append(
                {"path": f"datasets/{name}/{rel}", "reason": "a secrets directory: not entered"}
            )
            continue
        if len(lines) + len(skipped) >= max_files:
            skipped.append({"path": "...", "reason": f"more than {max_files} entries: not listed"})
            break
        if error or st is None:
            skipped.append({"path": rel, "reason": f"unreadable: {error}"})
            continue
        reason = secret_reason(rel)
        if reason:
            excluded.append({"path": f"datasets/{name}/{rel}", "reason": f"{reason}: not read"})
            continue
        if stat.S_ISLNK(st.st_mode):
            skipped.append({"path": rel, "reason": f"symbolic link to {str(path.readlink())!r}"})
            continue
        if not stat.S_ISREG(st.st_mode):
            skipped.append({"path": rel, "reason": "not a regular file"})
            continue
        files += 1
        digest = known.get(path)
        if digest is None:
            if st.st_size > file_limit:
                skipped.append(
                    {"path": rel, "size": st.st_size, "reason": f"larger than {file_limit} bytes"}
                )
                continue
            if hashed + st.st_size > budget:
                skipped.append(
                    {"path": rel, "size": st.st_size, "reason": f"over the {budget}-byte budget"}
                )
                continue
            try:
                digest = sha256_file(path)
            except OSError as exc:
                skipped.append({"path": rel, "reason": f"unreadable: {exc.strerror or exc}"})
                continue
            hashed += st.st_size
        lines.append(sha256sum_line(digest, rel))
    detail = {
        "dataset": name,
        "directory": str(root),
        "files": files,
        "hashed": len(lines),
        "hashed_bytes": hashed,
        "file_limit": file_limit,
        "skipped": skipped,
    }
    return b"".join(lines), detail, excluded


def newest_reports(lab_reports: Path) -> dict[str, Path]:
    """The newest report folder of each kind in ``lab_reports`` (verify folders carry no
    kind: ``20261206-041500``; ``-2`` when two fall in one second)."""
    best: dict[str, tuple[tuple[str, int], Path]] = {}
    if not lab_reports.is_dir():
        return {}
    for p in lab_reports.iterdir():
        m = REPORT_DIR.match(p.name)
        if not m or p.is_symlink() or not p.is_dir():
            continue
        kind = m.group(2) or "verify"
        key = (m.group(1), int(m.group(3) or 1))
        if kind in REPORT_KINDS and (kind not in best or key > best[kind][0]):
            best[kind] = (key, p)
    return {kind: best[kind][1] for kind in REPORT_KINDS if kind in best}


def report_pieces(
    kind: str, folder: Path, excluded: list[dict[str, str]], *, limit: int | None = None
) -> list[Piece]:
    """The files of one report folder as ``host/reports/<folder>/<file>``; secret-looking
    names excluded, links and odd names skipped; none above ``limit`` bytes
    (:data:`REPORT_FILE_LIMIT`)."""
    limit = REPORT_FILE_LIMIT if limit is None else limit
    pieces: list[Piece] = []
    for rel, path, st, error in _walk(folder):
        where = f"host/reports/{folder.name}/{rel}"
        what = f"{kind} report: {rel}"
        if error == "secret-dir":
            excluded.append({"path": where, "reason": "a secrets directory: not entered"})
            continue
        reason = secret_reason(rel)
        if reason:
            excluded.append({"path": where, "reason": f"{reason}: not copied"})
            continue
        if error or st is None:
            pieces.append(Piece(Item("", "host", what, status=ERROR, error=error)))
            continue
        if not stat.S_ISREG(st.st_mode):
            pieces.append(
                Piece(Item("", "host", what, status=SKIPPED, note="not a regular file (a link?)"))
            )
            continue
        if not member_path_ok(where):
            pieces.append(
                Piece(Item("", "host", what, status=SKIPPED, note="a name evidence cannot carry"))
            )
            continue
        if st.st_size > limit:
            pieces.append(
                Piece(Item("", "host", what, status=SKIPPED, note=f"larger than {limit} bytes"))
            )
            continue
        try:
            pieces.append(Piece(Item(where, "host", what), _read_plain(path, limit)))
        except OSError as exc:
            pieces.append(Piece(Item("", "host", what, status=ERROR, error=str(exc))))
    return pieces


def _router_piece(router_ns: str) -> Piece:
    cmd = ["ip", "netns", "exec", router_ns, "nft", "-j", "list", "ruleset"]
    item = Item("host/router-nft.json", "host", "router ruleset with counters", " ".join(cmd))
    try:
        done = run(cmd, check=False, timeout=60)
    except LabError as exc:
        item.path, item.status, item.error = "", ERROR, " ".join(exc.lines)
        return Piece(item)
    if done.returncode != 0:
        item.path, item.status = "", ERROR
        item.error = f"exit {done.returncode}: {_tail(done.stderr.encode())}"
        return Piece(item)
    return Piece(item, done.stdout.encode())


def collect_host(ctx: Context, reports_root: Path) -> HostEvidence:
    """Everything from the operator's host; each part on its own, an error in one is
    recorded and the rest still collected."""
    started = time.monotonic()
    host = HostEvidence()
    spec = ctx.spec
    try:
        host.pieces.append(
            Piece(Item("lab/lab.yaml", "host", "the lab spec"), _read_plain(ctx.spec_path, 1 << 24))
        )
    except OSError as exc:
        host.pieces.append(Piece(Item("", "host", "the lab spec", status=ERROR, error=str(exc))))

    if ctx.target == "local":
        from mlseclab.targets.local.artifacts import pinned_model_files
        from mlseclab.targets.local.names import LocalNames
        from mlseclab.targets.local.snapshots import MANIFEST, SnapshotStore

        names = LocalNames(spec.lab.name, Path(spec.lab.local.datasets_root))
        host.pieces.append(_router_piece(names.router_ns))

        known: dict[Path, str] = {}
        for pinned in pinned_model_files(spec, names.dataset_dir):
            entry: dict[str, Any] = {
                "model": pinned.name,
                "dataset": pinned.dataset,
                "path": str(pinned.path),
                "pin": pinned.sha256,
            }
            try:
                entry["found"] = pinned.found
                entry["matches"] = pinned.matches
                if pinned.found:
                    known[pinned.path] = pinned.found
            except OSError as exc:
                entry["found"], entry["matches"], entry["error"] = None, False, str(exc)
            host.models.append(entry)
        models_item = Item("host/models.json", "host", "model files against their pins")
        bad = [m["model"] for m in host.models if not m["matches"]]
        if bad:
            models_item.note = "differ from their pin or are missing: " + ", ".join(bad)
        host.pieces.append(Piece(models_item, (json.dumps(host.models, indent=1) + "\n").encode()))

        for ds in spec.datasets:
            root = names.dataset_dir(ds)
            what = f"dataset {ds}: sha256 of its files"
            if not root.is_dir() or root.is_symlink():
                host.pieces.append(
                    Piece(Item("", "host", what, status=SKIPPED, note=f"no directory {root}"))
                )
                continue
            t0 = time.monotonic()
            listing, detail, excluded = dataset_listing(ds, root, known)
            host.excluded += excluded
            item = Item(f"host/datasets/{ds}.sha256", "host", what)
            item.seconds = time.monotonic() - t0
            item.note = (
                f"{detail['hashed']} of {detail['files']} files hashed; "
                f"{len(detail['skipped'])} skipped (in {ds}.json); "
                f"`cd {root} && sha256sum -c` checks the listing"
            )
            host.pieces.append(Piece(item, listing))
            host.pieces.append(
                Piece(
                    Item(f"host/datasets/{ds}.json", "host", f"dataset {ds}: what was skipped"),
                    (json.dumps(detail, indent=1) + "\n").encode(),
                )
            )

        store = SnapshotStore(names.snapshots_dir)
        snap_item = Item("host/snapshots.json", "host", "recent dataset snapshots")
        try:
            snaps = store.find()
        except OSError as exc:
            snap_item.path, snap_item.status, snap_item.error = "", ERROR, str(exc)
            host.pieces.append(Piece(snap_item))
            snaps = []
        else:
            recent = [
                s
                for ds in sorted({s.dataset for s in snaps})
                for s in [x for x in snaps if x.dataset == ds][-RECENT_SNAPSHOTS:]
            ]
            snap_item.note = f"{len(recent)} of {len(snaps)} (the newest {RECENT_SNAPSHOTS} each)"
            host.pieces.append(
                Piece(
                    snap_item, (json.dumps([s.as_json() for s in recent], indent=1) + "\n").encode()
                )
            )
            for s in recent:
                where = f"host/snapshots/{s.dataset}/{s.id}/manifest.json"
                what = f"snapshot {s.dataset}/{s.id}: manifest"
                try:
                    host.pieces.append(
                        Piece(Item(where, "host", what), _read_plain(s.path / MANIFEST, 1 << 20))
                    )
                except OSError as exc:
                    host.pieces.append(Piece(Item("", "host", what, status=ERROR, error=str(exc))))
    else:
        for what in ("router ruleset", "model files against their pins", "datasets", "snapshots"):
            host.pieces.append(
                Piece(
                    Item(
                        "",
                        "host",
                        what,
                        status=SKIPPED,
                        note=f"the local target only (this lab runs on {ctx.target})",
                    )
                )
            )

    lab_reports = reports_root / spec.lab.name
    found = newest_reports(lab_reports)
    for kind in REPORT_KINDS:
        if kind not in found:
            host.pieces.append(
                Piece(
                    Item(
                        "",
                        "host",
                        f"newest {kind} report",
                        status=SKIPPED,
                        note=f"no {kind} report in {lab_reports}",
                    )
                )
            )
            continue
        host.pieces += report_pieces(kind, found[kind], host.excluded)
    host.seconds = time.monotonic() - started
    return host


# -- putting it together ------------------------------------------------------------


@dataclass
class Evidence:
    """Everything collected, before it is written."""

    nodes: list[NodeEvidence]
    host: HostEvidence
    started: dt.datetime
    finished: dt.datetime
    seconds: float

    def pieces(self) -> Iterator[Piece]:
        for n in self.nodes:
            yield from n.pieces
        yield from self.host.pieces


def collect(
    ctx: Context,
    nodes: list[str],
    since: dt.datetime,
    reports_root: Path,
    on_node: Callable[[NodeEvidence], None] | None = None,
) -> Evidence:
    """Collect from ``nodes`` (in parallel) and from the host at the same time."""
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    ctx.home.ensure_control_dir()
    config = ctx.home.ssh_config
    with ThreadPoolExecutor(max_workers=min(8, len(nodes) + 1)) as pool:
        host_job = pool.submit(collect_host, ctx, reports_root)
        jobs = [pool.submit(collect_node, config, n, since) for n in nodes]
        gathered = []
        for job in jobs:
            found = job.result()
            if on_node is not None:
                on_node(found)
            gathered.append(found)
        host = host_job.result()
    return Evidence(
        nodes=gathered,
        host=host,
        started=started,
        finished=dt.datetime.now(dt.UTC),
        seconds=time.monotonic() - t0,
    )


def who() -> dict[str, Any]:
    """Who collected: the user (and the one behind sudo), the host, the command line."""
    import pwd
    import sys

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    out: dict[str, Any] = {"user": user, "uid": os.getuid(), "host": socket.gethostname()}
    if os.environ.get("SUDO_USER"):
        out["sudo_user"] = os.environ["SUDO_USER"]
    out["command"] = " ".join(["mlseclab", *sys.argv[1:]])
    return out


def drops(evidence: Evidence) -> dict[str, dict[str, int]]:
    """Packets each drop rule counted, per node and for the router (from the rulesets)."""
    from mlseclab.attack.scenarios import drop_counters

    out: dict[str, dict[str, int]] = {}
    for piece in evidence.pieces():
        path = piece.item.path
        if piece.data is None or not path.endswith(("nft-ruleset.json", "router-nft.json")):
            continue
        try:
            counted = drop_counters(json.loads(piece.data))
        except (ValueError, AttributeError, TypeError):
            continue
        out["router" if path.startswith("host/") else piece.item.source] = counted
    return out


def index(
    ctx: Context,
    evidence: Evidence,
    since: dt.datetime,
    since_given: str,
    items: list[Item],
) -> dict[str, Any]:
    """evidence.json: what a reader needs to trust and find everything else."""
    counts = {s: sum(1 for i in items if i.status == s) for s in (OK, TRUNCATED, SKIPPED, ERROR)}
    differing = [m["model"] for m in evidence.host.models if not m.get("matches")]
    return {
        "format": FORMAT,
        "lab": ctx.spec.lab.name,
        "spec": str(ctx.spec_path),
        "target": ctx.target,
        "mlseclab": __version__,
        "started": evidence.started.isoformat(timespec="seconds"),
        "finished": evidence.finished.isoformat(timespec="seconds"),
        "seconds": round(evidence.seconds, 1),
        "collected_by": who(),
        "since": since.isoformat(timespec="seconds"),
        "since_given": since_given,
        "nodes": {
            n.node: {"answered": n.answered, "error": n.error, "seconds": round(n.seconds, 1)}
            for n in evidence.nodes
        },
        "limits": {
            "journal_bytes": JOURNAL_LIMIT,
            "output_bytes": OUTPUT_LIMIT,
            "dataset_file_bytes": DATASET_FILE_LIMIT,
            "dataset_bytes_budget": DATASET_BYTES_BUDGET,
            "report_file_bytes": REPORT_FILE_LIMIT,
        },
        "models": evidence.host.models,
        "drops": drops(evidence),
        "summary": {
            "items": len(items),
            **counts,
            "nodes_not_answering": [n.node for n in evidence.nodes if not n.answered],
            "models_differing": differing,
        },
        "items": [i.as_dict() for i in items],
        "excluded": evidence.host.excluded,
    }


def build_archive(
    ctx: Context, evidence: Evidence, since: dt.datetime, since_given: str
) -> tuple[str, bytes, dict[str, Any]]:
    """The archive's top directory name, its bytes, and its evidence.json."""
    from mlseclab.evidence.archive import ArchiveWriter

    top = f"evidence-{ctx.spec.lab.name}-{evidence.started:%Y%m%dT%H%M%SZ}"
    writer = ArchiveWriter(top, evidence.finished.timestamp())
    items: list[Item] = []
    for piece in evidence.pieces():
        item = piece.item
        if piece.data is not None and item.path:
            item.sha256 = writer.add(item.path, piece.data)
            item.bytes = len(piece.data)
        items.append(item)
    meta = index(ctx, evidence, since, since_given, items)
    return top, writer.finish(meta), meta
