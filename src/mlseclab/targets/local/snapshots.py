"""Snapshots of a lab's datasets on the local target, kept under the lab's data root.

Layout::

    <datasets_root>/<lab>/snapshots/            0700
        <dataset>/                              0700
            <id>/                               0700, e.g. 20250102T030405Z-down
                manifest.json                   0600: dataset, created, reason, nodes,
                                                files, bytes, sha256 of the file list
                data/                           the dataset as it was (owners, modes, times)

A snapshot is a full copy made with ``cp -a --reflink=auto``: on a filesystem
that can share extents (XFS, btrfs, ZFS 2.2 with block cloning) it costs
nothing until the dataset changes; on ext4 it is a plain copy. Hard links are
never used, also for datasets that every node mounts read-only: the host
writes into those datasets too (mlseclab places model files there, an
operator edits a corpus), and a hard link shares the inode, so an in-place
write or a ``chmod`` on the live file would silently change the snapshot.

Callers stop the nodes that use a dataset before taking its snapshot (a copy of
a live PostgreSQL directory is not consistent); :meth:`SnapshotStore.take`
checks that nothing changed while it copied. A snapshot is made in a hidden
``.<id>.partial`` directory and renamed into place only when its manifest is
written, so an interrupted copy never shows up as a snapshot.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlseclab.errors import LabError
from mlseclab.process import run
from mlseclab.state import write_private

#: the reasons a snapshot is taken (the last part of its id)
REASONS = ("down", "purge", "rebuild", "pre-restore")
#: ``20250102T030405Z-down``, ``20250102T030405Z-down.2`` when two fall in one second
SNAPSHOT_ID = re.compile(r"^\d{8}T\d{6}Z-[a-z][a-z-]*(\.\d+)?$")
MANIFEST = "manifest.json"
DATA = "data"
#: bytes kept free beyond a snapshot's size before a copy starts
SPACE_MARGIN = 256 * 1024 * 1024


class SnapshotError(LabError):
    """A snapshot cannot be taken, found or restored."""


@dataclass(frozen=True)
class Listing:
    """What a directory tree holds, as far as a copy must reproduce it."""

    files: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Snapshot:
    dataset: str
    id: str
    created: str  # ISO 8601, UTC, microseconds
    reason: str
    nodes: tuple[str, ...]
    files: int
    bytes: int
    listing_sha256: str
    path: Path

    @property
    def data(self) -> Path:
        return self.path / DATA

    def as_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "id": self.id,
            "created": self.created,
            "reason": self.reason,
            "nodes": list(self.nodes),
            "files": self.files,
            "bytes": self.bytes,
            "listing_sha256": self.listing_sha256,
            "path": str(self.path),
        }


def listing(root: Path) -> Listing:
    """Regular files, their bytes, and the sha256 of the sorted list of every entry with
    its type, mode, owner, size, mtime (and a symlink's target): equal for a faithful copy.
    """
    digest = hashlib.sha256()
    files = size = 0

    def entry(path: Path, rel: str) -> os.stat_result:
        st = path.lstat()
        kind = (
            "d"
            if stat.S_ISDIR(st.st_mode)
            else "f"
            if stat.S_ISREG(st.st_mode)
            else "l"
            if stat.S_ISLNK(st.st_mode)
            else "o"
        )
        fields = [
            rel,
            kind,
            f"{stat.S_IMODE(st.st_mode):o}",
            f"{st.st_uid}:{st.st_gid}",
            str(st.st_size if kind == "f" else 0),
            str(st.st_mtime_ns),
            str(path.readlink()) if kind == "l" else "",
        ]
        digest.update("\0".join(fields).encode("utf-8", "surrogateescape") + b"\n")
        return st

    def walk(directory: Path, rel: str) -> None:
        nonlocal files, size
        for path in sorted(directory.iterdir()):
            child = f"{rel}/{path.name}" if rel != "." else path.name
            st = entry(path, child)
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
            elif stat.S_ISDIR(st.st_mode):
                walk(path, child)

    entry(root, ".")
    walk(root, ".")
    return Listing(files=files, bytes=size, sha256=digest.hexdigest())


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (0 when it does not exist)."""
    return listing(root).bytes if root.is_dir() else 0


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def copy_tree(source: Path, dest: Path) -> None:
    """``cp -a --reflink=auto``: owners, modes, times, links and xattrs kept; extents shared
    where the filesystem can. ``dest`` must not exist."""
    run(["cp", "-a", "--reflink=auto", "--", str(source), str(dest)], timeout=6 * 3600)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


class SnapshotStore:
    """The snapshots of one lab's datasets, under ``root`` (``<data root>/<lab>/snapshots``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dataset_root(self, dataset: str) -> Path:
        return self.root / dataset

    # -- reading -------------------------------------------------------------------
    def find(self, dataset: str | None = None) -> list[Snapshot]:
        """Snapshots, oldest first (by dataset when ``dataset`` is None)."""
        if dataset is not None:
            datasets = [dataset]
        elif self.root.is_dir():
            datasets = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        else:
            datasets = []
        out: list[Snapshot] = []
        for ds in datasets:
            d = self.dataset_root(ds)
            if not d.is_dir():
                continue
            found = [
                s
                for p in d.iterdir()
                if p.is_dir() and SNAPSHOT_ID.match(p.name)
                for s in [self._read(ds, p)]
                if s is not None
            ]
            out += sorted(found, key=lambda s: (s.created, s.id))
        return out

    def _read(self, dataset: str, path: Path) -> Snapshot | None:
        try:
            m = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            return Snapshot(
                dataset=dataset,
                id=path.name,
                created=str(m["created"]),
                reason=str(m["reason"]),
                nodes=tuple(str(n) for n in m.get("nodes", [])),
                files=int(m["files"]),
                bytes=int(m["bytes"]),
                listing_sha256=str(m["listing_sha256"]),
                path=path,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not a snapshot mlseclab finished: never listed, never pruned

    def get(self, dataset: str, snapshot_id: str) -> Snapshot:
        """The snapshot ``snapshot_id`` of ``dataset``, or an error naming the valid ids."""
        snaps = self.find(dataset)
        for s in snaps:
            if s.id == snapshot_id:
                return s
        if not snaps:
            raise SnapshotError(
                f"dataset {dataset} has no snapshots (in {self.dataset_root(dataset)}); "
                "`mlseclab snapshots` lists what there is"
            )
        raise SnapshotError(
            f"dataset {dataset} has no snapshot {snapshot_id!r}; its snapshots: "
            + ", ".join(s.id for s in reversed(snaps))
        )

    def verify(self, snap: Snapshot) -> None:
        """Refuse a snapshot whose files no longer match its manifest."""
        if not snap.data.is_dir():
            raise SnapshotError(f"snapshot {snap.dataset}/{snap.id} has no data ({snap.data})")
        now = listing(snap.data)
        if now.sha256 != snap.listing_sha256:
            raise SnapshotError(
                f"snapshot {snap.dataset}/{snap.id} was changed after it was taken "
                f"({now.files} files now, {snap.files} recorded; {snap.path}); "
                "it is not restored"
            )

    # -- writing -------------------------------------------------------------------
    def _new_id(self, dataset: str, reason: str, now: dt.datetime) -> str:
        base = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{reason}"
        d = self.dataset_root(dataset)
        sid, n = base, 1
        while (d / sid).exists() or (d / f".{sid}.partial").exists():
            n += 1
            sid = f"{base}.{n}"
        return sid

    def check_space(self, sizes: dict[str, int]) -> None:
        """Refuse before anything stops when the copies cannot fit (reflinks aside)."""
        need = sum(sizes.values())
        if not need:
            return
        probe = self.root
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if need + SPACE_MARGIN > free:
            detail = ", ".join(f"{ds} {human(b)}" for ds, b in sorted(sizes.items()))
            raise SnapshotError(
                f"no room for the snapshots ({detail}; {human(free)} free on {probe}); free "
                "space, lower datasets.<name>.snapshots.keep, or set "
                "datasets.<name>.snapshots.before_destroy: false in the spec"
            )

    def take(
        self,
        dataset: str,
        source: Path,
        *,
        reason: str,
        nodes: Sequence[str] = (),
        move: bool = False,
        now: dt.datetime | None = None,
    ) -> Snapshot:
        """Snapshot ``source``: a copy, or with ``move`` the directory itself renamed in
        (``source`` is gone afterwards). The nodes using it must be stopped."""
        if reason not in REASONS:
            raise ValueError(f"unknown snapshot reason {reason!r}")
        if not source.is_dir():
            raise SnapshotError(f"dataset {dataset} has no directory {source}; nothing to snapshot")
        when = now or dt.datetime.now(dt.UTC)
        _private_dir(self.root)
        d = self.dataset_root(dataset)
        _private_dir(d)
        for stale in d.glob(".*.partial"):  # an interrupted earlier run's copy
            shutil.rmtree(stale)
        sid = self._new_id(dataset, reason, when)
        partial = d / f".{sid}.partial"
        partial.mkdir(mode=0o700)
        try:
            if move:
                before = listing(source)
                try:
                    source.rename(partial / DATA)
                except OSError as exc:
                    if exc.errno in (errno.EXDEV, errno.EBUSY):
                        raise SnapshotError(
                            f"{source} is a mount point or on another filesystem than "
                            f"{self.root}; the local target keeps datasets as plain "
                            "directories under its data root"
                        ) from None
                    raise
                after = listing(partial / DATA)
            else:
                before = listing(source)
                copy_tree(source, partial / DATA)
                after = listing(partial / DATA)
                if listing(source) != before:
                    raise SnapshotError(
                        f"dataset {dataset} changed while it was copied ({source}); a node "
                        "or a process on the host is writing to it. Stop it and try again"
                    )
            if after != before:
                raise SnapshotError(
                    f"the snapshot of dataset {dataset} differs from {source} "
                    f"({after.files} files copied, {before.files} there)"
                )
            manifest = {
                "dataset": dataset,
                "id": sid,
                "created": when.isoformat(timespec="microseconds"),
                "reason": reason,
                "nodes": sorted(nodes),
                "files": after.files,
                "bytes": after.bytes,
                "listing_sha256": after.sha256,
                "method": "rename" if move else "cp -a --reflink=auto",
            }
            write_private(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n")
            partial.rename(d / sid)
        except BaseException:
            if move and (partial / DATA).is_dir() and not source.exists():
                (partial / DATA).rename(source)  # put the dataset back where it was
            shutil.rmtree(partial, ignore_errors=True)
            raise
        snap = self._read(dataset, d / sid)
        assert snap is not None
        return snap

    def prune(self, dataset: str, keep: int) -> list[Snapshot]:
        """Remove the oldest snapshots of ``dataset`` beyond the newest ``keep`` (at least 1)."""
        snaps = self.find(dataset)
        doomed = snaps[: max(len(snaps) - max(keep, 1), 0)]
        for s in doomed:
            shutil.rmtree(s.path)
        return doomed

    def restore(
        self, dataset: str, snapshot_id: str, target: Path, *, nodes: Sequence[str] = ()
    ) -> tuple[Snapshot, Snapshot | None]:
        """Put snapshot ``snapshot_id`` back at ``target``; what was there becomes a
        ``pre-restore`` snapshot. Returns (the snapshot restored, the pre-restore one).

        The snapshot is verified, copied next to ``target`` and verified again before the
        current contents are moved aside, so a failed copy leaves the dataset as it was.
        """
        snap = self.get(dataset, snapshot_id)  # only ids listed here: never a path
        self.verify(snap)
        staging = target.parent / f".{target.name}.restoring"
        if staging.exists():
            shutil.rmtree(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            copy_tree(snap.data, staging)
            if listing(staging).sha256 != snap.listing_sha256:
                raise SnapshotError(
                    f"the copy of snapshot {dataset}/{snap.id} differs from it; "
                    f"dataset {dataset} was not changed"
                )
            pre = (
                self.take(dataset, target, reason="pre-restore", nodes=nodes, move=True)
                if target.exists()
                else None
            )
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return snap, pre

    def purge(self) -> list[str]:
        """Delete every snapshot of the lab; returns the datasets that had some."""
        if not self.root.is_dir():
            return []
        gone = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        shutil.rmtree(self.root)
        return gone
