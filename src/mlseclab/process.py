"""Running host commands: the project's one subprocess runner, and the mounts it checks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mlseclab.errors import LabError, TargetError

#: tool -> Debian package that provides it
REQUIRED_TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "bridge": "iproute2",
    "nft": "nftables",
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "mount": "mount",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ssh-keyscan": "openssh-client",
}


def run(
    cmd: Sequence[str], *, check: bool = True, input_text: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (never through a shell); raise TargetError with its stderr on failure."""
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            input=input_text,
            timeout=timeout,
            check=False,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        pkg = REQUIRED_TOOLS.get(cmd[0], "the package that provides it")
        raise TargetError(
            f"{cmd[0]} is not installed; install it with `apt-get install {pkg}`"
        ) from None
    except subprocess.TimeoutExpired:
        raise TargetError(f"`{' '.join(cmd)}` did not finish in {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise TargetError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
            f"{detail[-1] if detail else 'no output'}"
        )
    return proc


def ok(cmd: Sequence[str]) -> bool:
    return run(cmd, check=False).returncode == 0


def is_mounted(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    with Path("/proc/self/mounts").open(encoding="utf-8") as fh:
        return any(line.split()[1] == target for line in fh)


def mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    """Mount an overlay of ``lower`` (never written) with its changes in ``upper`` at ``merged``."""
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(merged),
        ]
    )


def unmount(path: Path) -> bool:
    if is_mounted(path):
        proc = run(["umount", str(path)], check=False)
        if proc.returncode != 0:
            run(["umount", "--lazy", str(path)])
        return True
    return False


def ssh(
    config: Path | str, node: str, command: str, *, stdin: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``ssh -F config node command`` (text in and out); the remote's exit code is the
    caller's to judge, a command that outlives ``timeout`` is a LabError naming it."""
    try:
        return subprocess.run(
            ["ssh", "-F", str(config), node, command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"{node}: `{command}` did not finish in {timeout:.0f}s") from None


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """Every running process and its arguments, from /proc (one that ends meanwhile is
    skipped)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(proc.name), args


def find_pids(*markers: str) -> list[int]:
    """Every running process whose command line holds each of ``markers`` as an argument."""
    want = [m.encode() for m in markers]
    return sorted(pid for pid, args in command_lines() if all(w in args for w in want))


def terminate(pid: int, timeout: float = 10) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True when the process was there."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def ssh_bytes(
    config: Path | str, node: str, command: str, *, timeout: float = 600
) -> subprocess.CompletedProcess[bytes]:
    """:func:`ssh` for output that must arrive byte for byte (a journal, cut at a byte
    limit, may end inside a UTF-8 character): stdin is empty, stdout and stderr bytes."""
    try:
        return subprocess.run(
            ["ssh", "-F", str(config), node, command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"{node}: `{command}` did not finish in {timeout:.0f}s") from None
