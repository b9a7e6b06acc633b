"""Per-lab state on the operator's machine: ``.mlseclab/<lab>/``.

The directory is 0700; secrets and state files inside are 0600 and are written
atomically. ``LabHome.lock()`` takes the lab's one lock, so two runs can never
act on the same lab at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlseclab.errors import LabError, LockedError

STATE_ROOT_ENV = "MLSECLAB_STATE_DIR"


def state_root() -> Path:
    return Path(os.environ.get(STATE_ROOT_ENV, ".mlseclab")).absolute()


def write_private(path: Path, content: str | bytes, mode: int = 0o600) -> None:
    """Write ``content`` to ``path`` atomically with ``mode`` from the first byte.

    The temporary file is made by mkstemp (O_CREAT|O_EXCL: a planted symlink or file of
    that name fails it, none is followed) and renamed over ``path``: rename replaces a
    symlink at ``path`` itself, never what it points to. A directory that is a symlink
    is refused rather than written through.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.is_symlink():
        raise LabError(
            f"{path.parent} is a symbolic link; mlseclab writes {path.name} only into a real "
            "directory: replace the link with a directory"
        )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content.encode() if isinstance(content, str) else content)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _make_dir(d: Path) -> bool:
    """mkdir ``d`` 0700; True when it was made now, False when something is there."""
    try:
        d.mkdir(mode=0o700)
    except FileExistsError:
        return False
    return True


def _real_dir(d: Path, what: str) -> os.stat_result:
    """lstat of ``d``, which must be a directory and not a symbolic link."""
    st = d.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise LabError(
            f"{d} ({what}) is a symbolic link; mlseclab does not follow links where it keeps "
            f"keys and state: replace it with a directory, or point {STATE_ROOT_ENV} elsewhere"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise LabError(f"{d} ({what}) is not a directory; move it away and run again")
    return st


def _open_lock(path: Path) -> int:
    """Open (or create 0600) the lock file without following a symlink planted there."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fix = "remove it (mlseclab creates the lock as a plain file)"
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LabError(f"{path} is a symbolic link, not the lab's lock; {fix}") from None
        if exc.errno == errno.EISDIR:
            raise LabError(f"{path} is a directory, not the lab's lock; {fix}") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
        os.close(fd)
        raise LabError(
            f"{path} is not a plain file of this user's with one link, so it is not the "
            f"lab's lock; {fix}"
        )
    return fd


@dataclass(frozen=True)
class LabHome:
    """Where one lab's state, keys, inventory and lock live."""

    lab: str
    root: Path

    @classmethod
    def for_lab(cls, lab: str) -> LabHome:
        return cls(lab=lab, root=state_root() / lab)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def kept_file(self) -> Path:
        """The directories ``down`` kept (protected datasets) that mlseclab made: the
        record ``up`` started, carried over to the next ``up`` and ``down``."""
        return self.root / "kept.json"

    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def forget(self) -> None:
        """After ``down``: remove what ``up`` wrote for reaching the lab (state, inventory,
        ssh_config, pinned host keys); the operator key pair stays for the next ``up``."""
        for f in (self.state_file, self.inventory, self.ssh_config, self.known_hosts):
            f.unlink(missing_ok=True)

    def ensure(self) -> None:
        """Create the lab's directories 0700; refuse any that is not safe to use as root.

        The state root (``MLSECLAB_STATE_DIR``, e.g. ``/tmp``) is chmodded only when this
        call created it. It must be a real directory of this user's or root's that others
        cannot rename entries in (not writable by them, or sticky like /tmp). The lab's
        directory and its ssh/ and logs/ must be real directories of this user's: they are
        tightened to 0700 when they are not.
        """
        root = self.root.parent
        if not root.exists() and not root.is_symlink():
            root.parent.mkdir(parents=True, exist_ok=True)
            if _make_dir(root):
                root.chmod(0o700)
        st = _real_dir(root, "the state directory")
        if st.st_uid not in (os.geteuid(), 0):
            raise LabError(
                f"{root} (the state directory) belongs to uid {st.st_uid}, not to this user; "
                f"point {STATE_ROOT_ENV} at a directory of your own"
            )
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise LabError(
                f"{root} (the state directory) is writable by other users and not sticky, so "
                f"they could swap the lab's directory; `chmod go-w {root}`, or point "
                f"{STATE_ROOT_ENV} at a directory of your own"
            )
        for d in (self.root, self.ssh_dir, self.logs):
            created = _make_dir(d)
            st = _real_dir(d, f"lab {self.lab}'s state directory")
            if st.st_uid != os.geteuid():
                raise LabError(
                    f"{d} belongs to uid {st.st_uid}, not to this user, so it is not lab "
                    f"{self.lab}'s state; remove it, or point {STATE_ROOT_ENV} elsewhere"
                )
            if created or stat.S_IMODE(st.st_mode) != 0o700:
                d.chmod(0o700)

    @property
    def control_path(self) -> str:
        """ssh's ControlPath for this lab's nodes (``%h``: the node's mgmt address).

        A socket path must fit in 107 bytes and ssh adds 17 while it creates one, so
        the sockets live in the state directory when it is short enough (the usual
        case: it survives a reboot), else in a short private directory in the system's
        temp dir, which :meth:`ensure_control_dir` re-creates before every use.
        """
        in_state = f"{self.root.resolve()}/cm-%h"
        if len(in_state) - 2 + 15 + 17 <= 107:  # %h is at most 15 chars (an IPv4 address)
            return in_state
        return f"{self._short_control_dir()}/%h"

    def _short_control_dir(self) -> Path:
        import hashlib

        tag = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"mlseclab-{os.getuid()}" / tag

    def ensure_control_dir(self) -> None:
        """Create the socket directory 0700 when it is not the state directory; refuse
        one another user owns."""
        if self.control_path.startswith(f"{self.root.resolve()}/"):
            return
        short = self._short_control_dir()
        for d in (short.parent, short):
            d.mkdir(mode=0o700, exist_ok=True)
            st = d.lstat()
            if not d.is_dir() or d.is_symlink() or st.st_uid != os.getuid():
                raise LabError(
                    f"{d} is not a directory this user owns; remove it (ssh keeps the lab's "
                    "connection sockets there)"
                )
            if st.st_mode & 0o077:
                d.chmod(0o700)

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the lab's lock for the duration; fail at once if another run has it."""
        self.ensure()
        path = self.root / "lock"
        fd = _open_lock(path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another run"
                raise LockedError(
                    f"lab {self.lab} is locked by {holder}; wait for it to finish "
                    f"(the lock is {path} and is released when that process ends)"
                ) from None
            os.ftruncate(fd, 0)
            os.write(
                fd,
                f"mlseclab {command} (pid {os.getpid()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(),
            )
            yield
        finally:
            os.close(fd)

    # -- state ---------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise LabError(
                f"{self.state_file}: state is corrupt ({exc.msg}); "
                "run `mlseclab down --force` to clear the lab"
            ) from None
        return data if isinstance(data, dict) else {}

    def write_state(self, state: dict[str, Any]) -> None:
        write_private(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

    # -- secrets -------------------------------------------------------------
    def ensure_ssh_key(self) -> Path:
        """The lab's operator key pair (ed25519, 0600), generated on first use."""
        self.ensure()
        if not self.ssh_key.exists():
            tmp = self.ssh_dir / ".id_ed25519.new"
            for p in (tmp, tmp.with_suffix(".new.pub")):
                p.unlink(missing_ok=True)
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"mlseclab@{self.lab}",
                    "-f",
                    str(tmp),
                ],
                check=True,
                stdin=subprocess.DEVNULL,
            )
            tmp.chmod(0o600)
            tmp.with_suffix(".new.pub").replace(self.ssh_key.with_suffix(".pub"))
            tmp.replace(self.ssh_key)
        self.ssh_key.chmod(0o600)
        return self.ssh_key
