"""``mlseclab evidence``: collect what a responder needs, in one archive; ``evidence verify``
checks an archive against its manifest."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from pathlib import Path

from mlseclab import ui
from mlseclab.commands.common import chosen_nodes, load_context
from mlseclab.errors import FINDINGS, OK, LabError
from mlseclab.evidence.archive import Since, parse_since, sha256sum_line, verify_archive
from mlseclab.evidence.collect import (
    ERROR,
    SKIPPED,
    TRUNCATED,
    NodeEvidence,
    build_archive,
    collect,
)
from mlseclab.posture.report import new_report_dir, reports_root
from mlseclab.state import write_private
from mlseclab.targets.local.snapshots import human

#: how far back the journals go without --since
DEFAULT_SINCE = "24h"
VERIFY = "verify"


def _output_dir(lab: str, args: argparse.Namespace) -> Path:
    """A new private folder for the archive: --output DIR, or <reports>/<lab>/<time>-evidence/."""
    if args.output is not None:
        directory = Path(args.output)
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            raise LabError(
                f"--output {directory}: not a directory (a file or a link is there); "
                "name a directory, or a new one"
            )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return directory
    directory = new_report_dir(lab, args.reports, kind="evidence")
    directory.chmod(0o700)  # journals and process lists are for responders only
    return directory


def cmd_evidence(args: argparse.Namespace) -> int:
    if args.nodes[:1] == [VERIFY]:
        return verify(Path(args.nodes[1]), as_json=args.json)
    ctx = load_context(args)
    nodes = chosen_nodes(ctx, list(args.nodes))
    if not ctx.home.ssh_config.exists():
        raise LabError(
            f"lab {ctx.spec.lab.name} is not up (no {ctx.home.ssh_config}), so there is no "
            "evidence to collect; `mlseclab status` shows what runs"
        )
    since: Since = args.since or Since(
        DEFAULT_SINCE, parse_since(DEFAULT_SINCE, dt.datetime.now(dt.UTC))
    )
    root = args.reports if args.reports is not None else reports_root()
    lab = ui.esc(ctx.spec.lab.name)

    def node_done(n: NodeEvidence) -> None:
        if args.json:
            return
        bad = [p.item for p in n.pieces if p.item.status == ERROR]
        size = sum(len(p.data) for p in n.pieces if p.data is not None)
        if not n.answered:
            ui.info(f"  [red]✗[/] {ui.esc(n.node)}: {ui.esc(n.error)}")
            return
        mark = "[yellow]![/]" if bad else "[green]✓[/]"
        ui.info(
            f"  {mark} {ui.esc(n.node)}: {len(n.pieces) - len(bad)} of {len(n.pieces)} items, "
            f"{human(size)} ({n.seconds:.1f}s)"
        )

    with ctx.home.lock("evidence"):
        directory = _output_dir(ctx.spec.lab.name, args)  # a bad --output fails before
        if not args.json:
            ui.info(
                f"evidence: lab [bold]{lab}[/], {len(nodes)} node(s), journals since "
                f"{since.moment:%Y-%m-%d %H:%M:%S} UTC ({ui.esc(since.text)})"
            )
        evidence = collect(ctx, nodes, since.moment, root, on_node=node_done)
    top, data, meta = build_archive(ctx, evidence, since.moment, since.text)
    archive = directory / f"{top}.tar.gz"
    digest = hashlib.sha256(data).hexdigest()
    write_private(archive, data, 0o600)
    write_private(directory / f"{archive.name}.sha256", sha256sum_line(digest, archive.name))
    summary = meta["summary"]
    incomplete = bool(summary[ERROR] or summary["models_differing"])
    if args.json:
        ui.out.print_json(
            json.dumps(
                {"archive": str(archive), "archive_sha256": digest, "bytes": len(data), **meta}
            )
        )
        return FINDINGS if incomplete else OK
    for item in meta["items"]:
        if item["status"] == ERROR:
            ui.warn(f"{item['source']}: {item['what']}: {item['error']}")
        elif item["status"] == TRUNCATED:
            ui.warn(f"{item['source']}: {item['what']}: {item['note']}")
    for model in meta["models"]:
        if not model.get("matches"):
            ui.warn(
                f"model {model['model']}: {model['path']} "
                + (
                    f"has sha256 {model['found']}, not its pin {model['pin']}"
                    if model.get("found")
                    else "is missing"
                )
            )
    if meta["models"] and not summary["models_differing"]:
        ui.plain(f"  models: {len(meta['models'])} file(s), each matches its pin")
    if meta["excluded"]:
        ui.plain(f"  {len(meta['excluded'])} secret-looking file(s) left out (evidence.json)")
    skipped = summary[SKIPPED]
    ui.plain(
        f"evidence: {len(meta['items'])} items ({summary['ok']} ok, {summary[TRUNCATED]} cut, "
        f"{skipped} skipped, {summary[ERROR]} failed) in {meta['seconds']:.1f}s; "
        f"{human(len(data))} archive"
    )
    ui.plain(f"  {archive}")
    ui.plain(f"  sha256 {digest} (also in {archive.name}.sha256: keep a copy elsewhere)")
    ui.plain(f"  check it with: mlseclab evidence verify {archive}")
    return FINDINGS if incomplete else OK


def verify(archive: Path, *, as_json: bool) -> int:
    """Check every member of ``archive`` against its manifest: exit 0 intact, 2 not."""
    check = verify_archive(archive)
    if as_json:
        ui.out.print_json(json.dumps(check.as_dict()))
        return OK if check.intact else FINDINGS
    lab = check.index.get("lab", "?")
    when = check.index.get("finished", "?")
    for kind, names in (
        ("changed", check.changed),
        ("missing", check.missing),
        ("extra", check.extra),
        ("unsafe", check.unsafe),
        ("malformed", check.malformed),
    ):
        for name in names:
            ui.plain(f"  {kind}: {name}")
    if check.unreadable:
        ui.plain(f"  unreadable: {check.unreadable}")
    side = f"{archive.name}.sha256"
    if check.sidecar == "differs":
        ui.plain(f"  changed: the archive itself: its sha256 is not the one in {side}")
    if check.intact:
        also = f"; its sha256 matches {side}" if check.sidecar == "matches" else ""
        ui.plain(
            f"evidence verify: {archive}: intact; {check.members} members match "
            f"MANIFEST.sha256{also} (lab {lab}, collected {when})"
        )
        return OK
    counts = ", ".join(
        f"{len(v)} {k}"
        for k, v in (
            ("changed", check.changed),
            ("missing", check.missing),
            ("extra", check.extra),
            ("unsafe", check.unsafe),
            ("malformed", check.malformed),
            ("archive sha256 differs", [side] if check.sidecar == "differs" else []),
        )
        if v
    )
    ui.error(
        f"evidence verify: {archive}: NOT intact ({counts or 'unreadable'}); "
        f"{check.members} of {check.listed} listed members checked"
    )
    return FINDINGS
