"""``mlseclab``: the command line. One error boundary for every command."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mlseclab import __version__, ui
from mlseclab.errors import ERROR, INTERRUPTED, USAGE, LabError, SpecError

EXIT_CODES = (
    f"Exit codes: 0 ok, {ERROR} error, 2 findings (drift or failed checks), "
    f"{USAGE} usage error (bad command line), {INTERRUPTED} interrupted."
)


class UsageError(Exception):
    """The command line is wrong; argparse has printed the usage and the message."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors end with ``USAGE``, not argparse's 2 (FINDINGS)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise UsageError(message)


def _spec_options(p: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """-f/--spec and -l/--lab; with neither, $MLSECLAB_SPEC or the reference lab
    (:func:`mlseclab.commands.common.resolve_spec`)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-f",
        "--spec",
        type=Path,
        metavar="FILE",
        help="lab spec (default: $MLSECLAB_SPEC or inventories/reference/lab.yaml)",
    )
    g.add_argument("-l", "--lab", metavar="NAME", help="shorthand for -f inventories/NAME/lab.yaml")
    return g


def _target_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        choices=("local", "proxmox"),
        help="where the lab runs (default: lab.target in the spec)",
    )


def _since(text: str) -> Any:
    """``--since``: an age or an ISO 8601 time (:func:`mlseclab.evidence.archive.parse_since`)."""
    import datetime as dt

    from mlseclab.evidence.archive import Since, parse_since

    try:
        return Since(text, parse_since(text, dt.datetime.now(dt.UTC)))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _evidence_usage(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], None]:
    """What argparse cannot say about ``evidence``: ``verify`` takes one ARCHIVE, and
    the collecting options mean nothing to it."""

    def check(args: argparse.Namespace) -> None:
        if args.nodes[:1] != ["verify"]:
            return
        if len(args.nodes) != 2:
            p.error("evidence verify takes one ARCHIVE: mlseclab evidence verify ARCHIVE")
        given = [o for o, v in (("--since", args.since), ("--output", args.output)) if v]
        if given:
            p.error(f"{' and '.join(given)}: for collecting, not for evidence verify")

    return check


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mlseclab",
        description="Stand up, harden, verify and drift-check a secure ML lab from one spec.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"mlseclab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check a lab spec; change nothing")
    _spec_options(p).add_argument(
        "file", nargs="?", type=Path, help="lab spec, the same as -f FILE"
    )
    _target_option(p)

    p = sub.add_parser("plan", help="show what up would create")
    _spec_options(p)
    _target_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--offline",
        action="store_true",
        help="proxmox: the plan from the program under mocks, without contacting the cluster "
        "(without it, a cluster that cannot be reached is an error)",
    )

    p = sub.add_parser("graph", help="draw the topology (SVG and PNG via graphviz)")
    _spec_options(p)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="DIR",
        help="where to write (default: .mlseclab/<lab>/)",
    )
    p.add_argument("--format", default="svg,png", help="comma-separated formats (svg,png,pdf)")

    p = sub.add_parser(
        "up", help="provision and harden the lab (idempotent: converges, creates nothing twice)"
    )
    _spec_options(p)
    _target_option(p)
    p.add_argument(
        "--no-harden", action="store_true", help="provision only; run `mlseclab harden` later"
    )
    p.add_argument("--no-verify", action="store_true", help="do not end with `mlseclab verify`")

    p = sub.add_parser("harden", help="run the hardening roles (roles/site.yml) on the lab")
    _spec_options(p)
    p.add_argument("--check", action="store_true", help="check mode with diffs: change nothing")
    p.add_argument("--limit", metavar="HOSTS", help="only these nodes or groups (ansible --limit)")
    p.add_argument("--tags", metavar="TAGS", help="only tasks with these tags")
    p.add_argument("--skip-tags", metavar="TAGS", help="skip tasks with these tags")
    p.add_argument("--json", action="store_true", help="print the per-node summary as JSON")

    p = sub.add_parser(
        "verify", help="prove the posture: run the checks in tests/posture on every node"
    )
    _spec_options(p)
    p.add_argument("nodes", nargs="*", metavar="NODE", help="only these nodes (default: all)")
    p.add_argument("-k", dest="select", metavar="EXPR", help="only checks matching (pytest -k)")
    p.add_argument(
        "--reports",
        type=Path,
        metavar="DIR",
        help="where report folders go (default: $MLSECLAB_REPORTS_DIR or reports/)",
    )

    p = sub.add_parser(
        "drift", help="what differs from the spec: infrastructure, configuration, posture"
    )
    _spec_options(p)
    p.add_argument("nodes", nargs="*", metavar="NODE", help="only these nodes (default: all)")
    p.add_argument(
        "--layers",
        metavar="LIST",
        help="comma-separated: infrastructure,configuration,posture (default: all three)",
    )
    p.add_argument("--fix", action="store_true", help="re-converge what drifted, then verify again")
    p.add_argument("--reports", type=Path, metavar="DIR", help="where report folders go")

    p = sub.add_parser("status", help="nodes, roles, segments, addresses and state")
    _spec_options(p)
    _target_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("down", help="remove what up made; protected datasets stay")
    _spec_options(p)
    _target_option(p)
    p.add_argument(
        "--purge-data",
        action="store_true",
        help="also delete protected datasets (asks first; --yes to skip). Each is snapshotted "
        "first; snapshots live under <datasets_root>/<lab>/snapshots and stay",
    )
    p.add_argument(
        "--purge-snapshots",
        action="store_true",
        help="also delete every dataset snapshot of the lab, taking none first (asks first)",
    )
    p.add_argument("--yes", action="store_true", help="answer yes to the purge question")
    p.add_argument(
        "--force",
        action="store_true",
        help="also clear leftovers of a crashed run that the state does not record",
    )

    p = sub.add_parser("ssh", help="open an SSH session to a node (or run a command on it)")
    _spec_options(p)
    p.add_argument("node")
    p.add_argument("remote", nargs=argparse.REMAINDER, help="command to run instead of a shell")

    p = sub.add_parser(
        "rag",
        help="the RAG service: query it as a client, ingest the corpus, show its state",
    )
    rag = p.add_subparsers(dest="rag_command", required=True, metavar="{query,ingest,status}")
    q = rag.add_parser(
        "query",
        help="ask the RAG service through the gateway as a client of the spec",
        description="POST /v1/rag/query to the gateway with the client's key from the lab's "
        "secrets (never printed); the answer cites documents that client may read.",
    )
    _spec_options(q)
    q.add_argument("--as", dest="client", required=True, metavar="CLIENT", help="a spec client")
    q.add_argument("question")
    q.add_argument("--json", action="store_true", help="the service's JSON answer")
    for name, text in (
        ("ingest", "ingest the corpora dataset now (idempotent) and show the report"),
        ("status", "the RAG units' state and the last ingest report"),
    ):
        r = rag.add_parser(name, help=text)
        _spec_options(r)
        r.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser(
        "attack",
        help="emulate the adversary from inside the lab: blocked, detected or missed",
        description="Run the attack scenarios against the live lab (local target): from a "
        "client namespace on the edge segment, from a node's service assumed compromised, "
        "and through the model and corpus supply chains. Each is bounded and stays inside "
        "the lab. Exit 0 when every scenario is blocked, 2 otherwise.",
    )
    _spec_options(p)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="only these (default: all)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument(
        "--detect-timeout",
        type=float,
        default=150.0,
        metavar="SECONDS",
        help="how long to wait after the last scenario for its alerts (default 150)",
    )
    p.add_argument("--reports", type=Path, metavar="DIR", help="where report folders go")

    p = sub.add_parser(
        "evidence",
        help="after an incident: collect journals, rulesets, processes, listeners, model and "
        "dataset hashes, reports and snapshots into one archive; `evidence verify` checks one",
        usage="%(prog)s [NODE...] [-l NAME] [--since TIME] [--reports DIR] [-o DIR] [--json]\n"
        "       %(prog)s verify ARCHIVE [--json]",
        description="Collect, read-only, from each node over the lab's SSH (journal since "
        "--since, nftables ruleset with counters, processes, listeners, failed units, logins) "
        "and from the host (router ruleset, model files against their pins, dataset sha256 "
        "listings, the newest verify, drift and attack reports, recent snapshots) into one "
        "tar.gz with a MANIFEST.sha256, written 0600. Secrets are never collected. Exit 0 "
        "when everything was collected and every model matches its pin, 2 when the archive "
        "is incomplete (a node did not answer, an item failed) or a model differs. "
        "`evidence verify ARCHIVE` checks every member against the manifest: exit 0 intact, "
        "2 not, 1 not an evidence archive.",
    )
    _spec_options(p)
    p.add_argument(
        "nodes",
        nargs="*",
        metavar="NODE",
        help="only these nodes (default: all); `verify ARCHIVE` checks an archive instead",
    )
    p.add_argument(
        "--since",
        type=_since,
        metavar="TIME",
        help="journals from this time: an age (30m, 2h, 1d) or an ISO 8601 time (default 24h)",
    )
    p.add_argument(
        "--reports",
        type=Path,
        metavar="DIR",
        help="where the lab's report folders are and the evidence folder goes "
        "(default: $MLSECLAB_REPORTS_DIR or reports/)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="DIR",
        help="write the archive into DIR instead (made 0700 if new)",
    )
    p.add_argument("--json", action="store_true", help="evidence.json (or the check) as JSON")
    p.set_defaults(usage_check=_evidence_usage(p))

    p = sub.add_parser(
        "rebuild",
        help="destroy and re-create nodes from the image, keeping datasets; then harden them",
        description="Stop the nodes, snapshot the protected datasets they mount, remove their "
        "root filesystems, re-create them (same addresses, SSH host keys and machine ids) "
        "and harden them. Datasets, secrets and the lab network stay.",
    )
    _spec_options(p)
    p.add_argument("nodes", nargs="*", metavar="NODE", help="only these nodes (default: all)")
    p.add_argument(
        "--no-harden", action="store_true", help="re-create only; run `mlseclab harden` later"
    )

    p = sub.add_parser(
        "snapshots",
        help="list the dataset snapshots (under <datasets_root>/<lab>/snapshots)",
        description="Snapshots are taken of protected datasets before down, down --purge-data "
        "and rebuild destroy what uses them, and before a restore; datasets.<name>.snapshots."
        "keep in the spec says how many of each are kept.",
    )
    _spec_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser(
        "restore",
        help="put a dataset back as a snapshot has it (what is there becomes a snapshot)",
        description="Stops the nodes that mount the dataset, moves its contents aside as a "
        "pre-restore snapshot, copies the snapshot back and starts those nodes again.",
    )
    _spec_options(p)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("snapshot", metavar="SNAPSHOT_ID", help="an id that `mlseclab snapshots` lists")
    p.add_argument("--yes", action="store_true", help="do not ask first")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    # Imported lazily so that `mlseclab validate` stays fast and needs no target code.
    from mlseclab import commands

    handler = getattr(commands, f"cmd_{args.command}")
    result: int = handler(args)
    return result


def _crash_log(exc: BaseException) -> Path:
    """Write the traceback of ``exc`` to a new file, mode 0600 from the start.

    It goes to ``logs/`` of the state directory ($MLSECLAB_STATE_DIR or .mlseclab),
    or to the temp directory when that cannot be written.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = "".join(traceback.format_exception(exc))
    bases = [Path(tempfile.gettempdir())]
    try:
        from mlseclab.state import state_root

        bases.insert(0, state_root() / "logs")
    except Exception:  # noqa: S110 - the crash may be in state itself
        pass
    for base in bases:
        path = base / f"mlseclab-crash-{stamp}-{os.getpid()}.log"
        try:
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return Path("/dev/null")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
        usage_check = getattr(args, "usage_check", None)
        if usage_check is not None:
            usage_check(args)
    except UsageError:
        return USAGE
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else ERROR
    try:
        return _dispatch(args)
    except SpecError as exc:  # compiler-style lines, so editors can jump to them
        for line in exc.lines:
            ui.err.print(line, markup=False)
        return ERROR
    except LabError as exc:
        for line in exc.lines:
            ui.error(line)
        return ERROR
    except KeyboardInterrupt:
        ui.error("interrupted; run the same command again to resume")
        return INTERRUPTED
    except Exception as exc:
        log = _crash_log(exc)
        ui.error(f"unexpected failure: {exc.__class__.__name__}: {exc}")
        ui.error(f"this is a bug in mlseclab; the traceback is in {log}")
        return ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
