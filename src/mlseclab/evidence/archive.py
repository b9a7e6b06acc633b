"""The evidence archive: one tar.gz, every member listed in ``MANIFEST.sha256``.

Layout (``<top>`` is ``evidence-<lab>-<UTC time>``)::

    <top>/MANIFEST.sha256       sha256sum format: `cd <top> && sha256sum -c MANIFEST.sha256`
    <top>/evidence.json         lab, time, who ran it, nodes, since, each item and its status
    <top>/nodes/<node>/...      what each node answered
    <top>/host/...              what the operator's host holds (router, models, datasets, ...)

Members are regular files only (no directories, links or devices), 0600, owned by
0:0, all with the collection's time. :func:`verify_archive` reads an archive member by
member in memory and never writes any of it to disk.

Nothing secret goes in: :func:`secret_reason` decides by path, before a file is opened.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mlseclab.errors import LabError

FORMAT = "mlseclab-evidence/1"
MANIFEST = "MANIFEST.sha256"
INDEX = "evidence.json"
#: the most of the manifest or the index that verify reads into memory
META_LIMIT = 16 * 1024 * 1024

#: what a member path the collector writes may be made of
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
#: one line of sha256sum's output: text (two spaces) or binary (`` *``) mode
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


class NotEvidence(LabError):
    """The file is not an evidence archive (not a tar, or no MANIFEST.sha256 in it)."""


# -- what is never collected ------------------------------------------------------

#: a path with one of these directories in it is never read
SECRET_DIRS = frozenset({"secrets", "credentials", "credstore", "private", ".ssh", ".gnupg"})
#: a file name whose last word (before an extension, or the extension) is one of these
#: is never read: ``db-password``, ``inference-api-key``, ``api-keys.txt``, ``x.token``;
#: ``key-rotation-runbook.md`` or ``password-policy.md`` are read
SECRET_WORDS = frozenset(
    {
        "key",
        "keys",
        "apikey",
        "password",
        "passwords",
        "passwd",
        "secret",
        "secrets",
        "token",
        "tokens",
        "credential",
        "credentials",
        "shadow",
        "gshadow",
        "env",
    }
)
#: private key and keystore suffixes; SSH key files by their usual names
SECRET_SUFFIXES = (".key", ".pem", ".p12", ".pfx", ".jks", ".keystore", ".kdbx")
_SSH_KEY = re.compile(r"^id_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?$|^ssh_host_.*_key$")


def secret_reason(path: str) -> str | None:
    """Why ``path`` (relative or absolute, ``/``-separated) must not be read; None if it
    may be. By name alone, erring towards leaving a file out: the lab's secrets dir,
    ``/etc/mlseclab/**/secrets`` and ``credentials`` dirs, ``*.key`` and other private
    key files, SSH keys, and a name whose last word says key, password, secret or token
    (:data:`SECRET_WORDS`)."""
    parts = [p for p in PurePosixPath(path).parts if p not in ("/", "")]
    for part in parts[:-1]:
        if part.lower() in SECRET_DIRS:
            return f"inside a {part}/ directory"
    name = parts[-1] if parts else ""
    lower = name.lower()
    if lower.endswith(SECRET_SUFFIXES):
        return "a private key or keystore file name"
    if _SSH_KEY.match(lower):
        return "an SSH key file name"
    stem = lower.rsplit(".", 1)[0] if "." in lower.lstrip(".") else lower
    last_words = {w[-1] for w in (re.split(r"[-_.]+", stem), re.split(r"[-_.]+", lower)) if w}
    if lower in SECRET_DIRS or last_words & SECRET_WORDS:
        return "a name that says key, password, secret or token"
    return None


# -- --since -------------------------------------------------------------------

_AGE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?(?:(\d+)s)?$")
SINCE_HELP = (
    "an age (30m, 2h, 1d, 1h30m) or an ISO 8601 time (2026-12-06T04:00, "
    "2026-12-06 04:00:00Z, 2026-12-06T05:00+01:00; without a zone it is local time)"
)


@dataclass(frozen=True)
class Since:
    """``--since`` as given and the moment it names (UTC)."""

    text: str
    moment: dt.datetime


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """The moment ``text`` names, in UTC: an age before ``now`` or an ISO 8601 time.

    Raises ValueError with the reason; a time after ``now`` is refused.
    """
    value = text.strip()
    age = _AGE.match(value)
    if value and age and any(age.groups()):
        d, h, m, s = (int(g or 0) for g in age.groups())
        return (now - dt.timedelta(days=d, hours=h, minutes=m, seconds=s)).astimezone(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; give {SINCE_HELP}") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the operator's local time
    moment = moment.astimezone(dt.UTC)
    if moment > now:
        raise ValueError(
            f"{text!r} is in the future ({moment:%Y-%m-%d %H:%M:%S} UTC); "
            "--since is when the journals start"
        )
    return moment


# -- writing ---------------------------------------------------------------------


def sha256sum_line(digest: str, name: str) -> bytes:
    """One line as ``sha256sum`` writes it (a name with ``\\`` or a newline escaped, the
    line starting with ``\\``), so ``sha256sum -c`` reads it back."""
    raw = name.encode("utf-8", "surrogateescape")
    if b"\\" in raw or b"\n" in raw or b"\r" in raw:
        raw = raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + digest.encode() + b"  " + raw + b"\n"
    return digest.encode() + b"  " + raw + b"\n"


def member_path_ok(rel: str) -> bool:
    """Whether ``rel`` is a path the collector may write: plain components, no ``..``."""
    parts = rel.split("/")
    return bool(parts) and all(_COMPONENT.match(p) and p not in (".", "..") for p in parts)


class ArchiveWriter:
    """A tar.gz built in memory, one regular member at a time; :meth:`finish` adds the
    index and the manifest and returns the archive's bytes."""

    def __init__(self, top: str, mtime: float) -> None:
        if not member_path_ok(top) or "/" in top:
            raise ValueError(f"not an archive top directory: {top!r}")
        self.top = top
        self.mtime = int(mtime)
        self._buffer = io.BytesIO()
        # closed by finish(): the archive is open while members are added
        self._gz = tarfile.open(  # noqa: SIM115
            fileobj=self._buffer, mode="w:gz", format=tarfile.PAX_FORMAT
        )
        self.digests: dict[str, str] = {}

    def add(self, rel: str, data: bytes) -> str:
        """Add ``data`` as ``<top>/<rel>``; returns its sha256."""
        if not member_path_ok(rel) or rel in (MANIFEST,):
            raise ValueError(f"not an evidence member path: {rel!r}")
        if rel in self.digests:
            raise ValueError(f"{rel} is in the archive already")
        info = tarfile.TarInfo(f"{self.top}/{rel}")
        info.size = len(data)
        info.mode = 0o600
        info.mtime = self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._gz.addfile(info, io.BytesIO(data))
        digest = hashlib.sha256(data).hexdigest()
        self.digests[rel] = digest
        return digest

    def manifest(self) -> bytes:
        return b"".join(sha256sum_line(d, rel) for rel, d in sorted(self.digests.items()))

    def finish(self, index: dict[str, Any]) -> bytes:
        """Add ``evidence.json`` (``index``) and ``MANIFEST.sha256``; the archive's bytes."""
        self.add(INDEX, (json.dumps(index, indent=1, sort_keys=False) + "\n").encode())
        manifest = self.manifest()
        info = tarfile.TarInfo(f"{self.top}/{MANIFEST}")
        info.size, info.mode, info.mtime = len(manifest), 0o600, self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._gz.addfile(info, io.BytesIO(manifest))
        self._gz.close()
        return self._buffer.getvalue()


# -- checking --------------------------------------------------------------------


@dataclass
class ArchiveCheck:
    """What :func:`verify_archive` found; names are relative to the archive's top."""

    archive: str
    top: str
    members: int = 0  # regular members checked against the manifest
    listed: int = 0  # entries in the manifest
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)  # "name: why"
    malformed: list[str] = field(default_factory=list)  # manifest lines it cannot read
    unreadable: str = ""  # the archive stopped being readable part-way
    #: the archive's sha256 against ``<archive>.sha256`` beside it: "" (none there),
    #: "matches" or "differs"
    sidecar: str = ""
    index: dict[str, Any] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        return not (
            self.missing
            or self.extra
            or self.changed
            or self.unsafe
            or self.malformed
            or self.unreadable
            or self.sidecar == "differs"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "archive": self.archive,
            "intact": self.intact,
            "top": self.top,
            "members": self.members,
            "listed": self.listed,
            "missing": self.missing,
            "extra": self.extra,
            "changed": self.changed,
            "unsafe": self.unsafe,
            "malformed": self.malformed,
            "unreadable": self.unreadable,
            "sidecar": self.sidecar,
            "lab": self.index.get("lab"),
            "collected": self.index.get("finished"),
        }


def _unsafe(member: tarfile.TarInfo, name: str) -> str | None:
    """Why extracting ``member`` could write outside its directory or make a special
    file; None when it is a plain file or directory under a relative name."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.split("/"):
        return "parent reference (..)"
    if any(not ch.isprintable() for ch in name):
        return "control character in the name"
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or directory"
    return None


def _hash_member(tf: tarfile.TarFile, member: tarfile.TarInfo, keep: bool) -> tuple[str, bytes]:
    """sha256 of a regular member, read in blocks; its bytes too when ``keep``."""
    fh = tf.extractfile(member)
    if fh is None:  # pragma: no cover - regular members always have a file object
        return "", b""
    digest = hashlib.sha256()
    kept = bytearray()
    with fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            if keep and len(kept) <= META_LIMIT:
                kept += block
    return digest.hexdigest(), bytes(kept)


def _strip_dot(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") if name not in ("/",) else name


def verify_archive(path: Path) -> ArchiveCheck:
    """Check every member of the archive at ``path`` against its ``MANIFEST.sha256``.

    Reads the archive once, in memory, extracting nothing; where ``<archive>.sha256``
    (written beside it by ``mlseclab evidence``) is there, the archive's own sha256 is
    compared with it too. Raises :class:`NotEvidence` for a file that is not a tar
    archive with a ``MANIFEST.sha256``.
    """
    if not path.is_file():
        raise NotEvidence(f"{path}: no such file")
    found: dict[str, str] = {}  # name -> sha256 of regular, safe members
    seen: set[str] = set()
    unsafe: list[str] = []
    meta: dict[str, bytes] = {}  # name -> bytes of every MANIFEST.sha256 and evidence.json
    unreadable = ""
    try:
        tf = tarfile.open(path, mode="r:*")  # noqa: SIM115 - the with below closes it
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise NotEvidence(
            f"{path}: not an evidence archive (not a tar archive: {exc}); "
            "`mlseclab evidence` writes evidence-<lab>-<time>.tar.gz"
        ) from None
    with tf:
        try:
            for member in tf:
                name = _strip_dot(member.name)
                why = _unsafe(member, name)
                if name in seen and not member.isdir():
                    why = why or "duplicate member (a later copy would replace the first)"
                seen.add(name)
                if why:
                    unsafe.append(f"{name}: {why}")
                    continue
                if member.isdir():
                    continue
                keep = PurePosixPath(name).name in (MANIFEST, INDEX)
                digest, data = _hash_member(tf, member, keep)
                found[name] = digest
                if keep:
                    meta[name] = data
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            unreadable = f"the archive is unreadable after {len(seen)} member(s): {exc}"
    manifests = sorted((n for n in meta if PurePosixPath(n).name == MANIFEST), key=len)
    if not manifests:
        if unreadable and not seen:
            raise NotEvidence(f"{path}: not an evidence archive ({unreadable})")
        raise NotEvidence(
            f"{path}: not an evidence archive (no {MANIFEST} in it); "
            "`mlseclab evidence` writes evidence-<lab>-<time>.tar.gz"
        )
    manifest_name = manifests[0]
    top = str(PurePosixPath(manifest_name).parent)
    top = "" if top == "." else top
    prefix = f"{top}/" if top else ""
    check = ArchiveCheck(archive=str(path), top=top, unsafe=unsafe, unreadable=unreadable)
    listed: dict[str, str] = {}
    text = meta[manifest_name].decode("utf-8", "surrogateescape")
    for n, line in enumerate(text.splitlines(), 1):
        m = _MANIFEST_LINE.match(line)
        rel = m.group(2) if m else ""
        if not m or not member_path_ok(rel) or rel in listed:
            check.malformed.append(f"{MANIFEST} line {n}: {line[:120]!r}")
            continue
        listed[rel] = m.group(1)
    check.listed = len(listed)
    for name, digest in sorted(found.items()):
        if name == manifest_name:
            continue
        rel = name[len(prefix) :] if name.startswith(prefix) else None
        if rel is None or rel not in listed:
            check.extra.append(rel if rel is not None else name)
            continue
        check.members += 1
        if digest != listed[rel]:
            check.changed.append(rel)
    present = {n[len(prefix) :] for n in found if n.startswith(prefix)}
    check.missing = sorted(set(listed) - present)
    if INDEX not in listed and INDEX not in present:
        check.missing.append(INDEX)
    side = path.with_name(f"{path.name}.sha256")
    if side.is_file() and not side.is_symlink():
        recorded = side.read_text(encoding="utf-8", errors="replace").split(maxsplit=1)[:1]
        actual = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                actual.update(block)
        check.sidecar = "matches" if recorded == [actual.hexdigest()] else "differs"
    index = meta.get(prefix + INDEX)
    if index is not None:
        try:
            loaded = json.loads(index)
            check.index = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            check.index = {}
    return check
