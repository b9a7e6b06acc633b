"""Nodes of the local target: systemd-nspawn containers booting systemd.

Each node's root filesystem is an overlay: the shared, read-only image below
and the node's own upper directory above, so a node costs only what it writes.
Before the first boot the host writes the node's identity into it: hostname,
machine id, SSH host keys and the operator's authorized key. A rebuild keeps
the host keys and the machine id (:func:`save_identity`, :func:`restore_identity`):
a rebuilt node is the same node, and the operator's pinned host key stays valid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mlseclab.cloudinit import hosts_file, resolv_conf
from mlseclab.errors import TargetError
from mlseclab.process import command_lines, is_mounted, mount_overlay, ok, run, unmount
from mlseclab.spec import OPERATOR_USER
from mlseclab.targets.local.names import LocalNames
from mlseclab.topology import LabNode

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: the hierarchies nspawn needs a node cgroup in when the host does not run systemd
CGROUP_HIERARCHIES = ("systemd", "unified")
#: where a rebuild keeps a node's host keys and machine id (inside the node's directory)
IDENTITY_DIR = "identity"


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


def host_runs_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def ensure_rootfs(node: str, names: LocalNames, image: Path) -> bool:
    """Mount the node's overlay root; True when it was mounted just now."""
    d = names.node_dir(node)
    merged = d / "root"
    if is_mounted(merged):
        return False
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "upper").chmod(0o755)
    mount_overlay(image, d / "upper", d / "work", merged)
    return True


def write_identity(node: LabNode, names: LocalNames, domain: str, operator_pubkey: str) -> str:
    """Hostname, machine id, host keys and authorized key; returns the host's public key line."""
    root = names.node_dir(node.name) / "root"
    etc = root / "etc"
    (etc / "hostname").write_text(node.name + "\n", encoding="utf-8")
    (etc / "hosts").write_text(hosts_file(node.name, domain), encoding="utf-8")
    machine_id = etc / "machine-id"
    if not machine_id.read_text(encoding="utf-8").strip():
        machine_id.write_text(secrets.token_hex(16) + "\n", encoding="utf-8")
    (etc / "resolv.conf").unlink(missing_ok=True)  # no DNS leaves the lab
    (etc / "resolv.conf").write_text(resolv_conf(domain), encoding="utf-8")
    ssh = etc / "ssh"
    key = ssh / "ssh_host_ed25519_key"
    if not key.exists():
        for stale in ssh.glob("ssh_host_*"):
            stale.unlink()
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"root@{node.name}",
                "-f",
                str(key),
            ]
        )
        key.chmod(0o600)
    home = root / "home" / OPERATOR_USER / ".ssh"
    uid, gid = _ids(root, OPERATOR_USER)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    auth = home / "authorized_keys"
    auth.write_text(operator_pubkey.strip() + "\n", encoding="utf-8")
    auth.chmod(0o600)
    for p in (home, auth):
        os.chown(p, uid, gid)
    return key.with_suffix(".pub").read_text(encoding="utf-8").split(" ", 2)[1]


def save_identity(node: str, names: LocalNames) -> bool:
    """Copy the node's SSH host keys and machine id out of its upper directory into
    ``<node dir>/identity`` (0700), for :func:`restore_identity` after a rebuild."""
    upper = names.node_dir(node) / "upper" / "etc"
    found = [p for p in sorted((upper / "ssh").glob("ssh_host_*")) if p.is_file()]
    found += [p for p in (upper / "machine-id",) if p.is_file()]
    if not any(p.name == "ssh_host_ed25519_key" for p in found):
        return False  # nothing to keep (or kept already by an interrupted rebuild)
    keep = names.node_dir(node) / IDENTITY_DIR
    tmp = keep.with_name(f".{IDENTITY_DIR}.new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    for p in found:
        shutil.copy2(p, tmp / p.name)
    shutil.rmtree(keep, ignore_errors=True)
    tmp.rename(keep)
    return True


def restore_identity(node: str, names: LocalNames) -> bool:
    """Put a kept identity into the node's (new) root before :func:`write_identity`, which
    then keeps the host key and the machine id it finds. True when there was one."""
    keep = names.node_dir(node) / IDENTITY_DIR
    if not keep.is_dir():
        return False
    etc = names.node_dir(node) / "root" / "etc"
    for stale in (etc / "ssh").glob("ssh_host_*"):
        stale.unlink()
    for p in sorted(keep.iterdir()):
        dest = etc / p.name if p.name == "machine-id" else etc / "ssh" / p.name
        dest.unlink(missing_ok=True)
        shutil.copy2(p, dest)
        os.chown(dest, 0, 0)
    shutil.rmtree(keep)
    return True


def _ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise TargetError(f"the node image has no user {user}; rebuild it (delete the image cache)")


def _cgroup_dirs(names: LocalNames, node: str) -> list[Path]:
    return [
        CGROUP_ROOT / h / "mlseclab" / names.lab / node
        for h in CGROUP_HIERARCHIES
        if (CGROUP_ROOT / h).is_dir()
    ]


def nspawn_command(node: str, names: LocalNames, mounts: list[Mount]) -> list[str]:
    cmd = [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        "--directory",
        str(names.node_dir(node) / "root"),
        "--machine",
        names.machine(node),
        "--hostname",
        node,
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{names.node_ns(node)}",
        "--capability=CAP_NET_ADMIN",
        "--private-users=no",
        "--kill-signal=SIGRTMIN+4",
        "--console=read-only",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
    ]
    for m in mounts:
        cmd.append(f"--bind{'-ro' if m.read_only else ''}={m.source}:{m.target}")
    return cmd


def start(node: str, names: LocalNames, mounts: list[Mount]) -> int:
    """Boot the node in the background; return the nspawn PID."""
    d = names.node_dir(node)
    log = d / "console.log"
    env = dict(
        os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="network", SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"
    )
    cmd = nspawn_command(node, names, mounts)
    if host_runs_systemd():
        # A transient service owns the container, so it outlives this command's session.
        unit = f"mlsl-{names.lab}-{node}"
        run(["systemctl", "reset-failed", unit], check=False)
        run(
            [
                "systemd-run",
                f"--unit={unit}",
                "--property=Delegate=yes",
                "--property=KillMode=mixed",
                "--collect",
                "--quiet",
                "--setenv=SYSTEMD_NSPAWN_API_VFS_WRITABLE=network",
                "--setenv=SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1",
                f"--property=StandardOutput=append:{log}",
                f"--property=StandardError=append:{log}",
                *cmd,
            ]
        )
        pid = int(run(["systemctl", "show", "-P", "MainPID", unit]).stdout.strip() or 0)
    else:
        cgroups = _cgroup_dirs(names, node)
        for cg in cgroups:
            cg.mkdir(parents=True, exist_ok=True)

        def enter_cgroups() -> None:  # runs in the child, before exec
            for cg in cgroups:
                (cg / "cgroup.procs").write_text(str(os.getpid()), encoding="utf-8")

        with log.open("ab") as fh:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=fh,
                env=env,
                start_new_session=True,
                preexec_fn=enter_cgroups,
            )
        pid = proc.pid
    (d / "nspawn.pid").write_text(f"{pid}\n", encoding="utf-8")
    return pid


def nspawn_pid(node: str, names: LocalNames) -> int | None:
    """The PID of the node's running nspawn, checked against /proc (never a stale file)."""
    pid_file = names.node_dir(node) / "nspawn.pid"
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"systemd-nspawn" in cmdline[0] and names.machine(node).encode() in cmdline:
        return pid
    return None


def find_nspawn_pids(names: LocalNames) -> dict[str, int]:
    """Every running nspawn of this lab, found in /proc (for `down --force`)."""
    found: dict[str, int] = {}
    marker = f"/run/netns/{names.netns_prefix}n-".encode()
    for pid, args in command_lines():
        if not args or b"systemd-nspawn" not in args[0]:
            continue
        for a in args:
            if a.startswith(b"--network-namespace-path=" + marker):
                found[a.split(marker, 1)[1].decode()] = pid
    return found


def leader_pid(nspawn: int) -> int | None:
    """The container's PID 1 as the host sees it."""
    with contextlib.suppress(OSError, ValueError):
        for task in Path(f"/proc/{nspawn}/task").iterdir():
            children = (task / "children").read_text(encoding="utf-8").split()
            if children:
                return int(children[0])
    return None


def system_state(nspawn: int) -> str:
    leader = leader_pid(nspawn)
    if leader is None:
        return "starting"
    proc = run(
        ["nsenter", "-t", str(leader), "-a", "systemctl", "is-system-running"],
        check=False,
        timeout=20,
    )
    return proc.stdout.strip() or "starting"


def wait_ready(node: LabNode, names: LocalNames, timeout: float = 90) -> str:
    """Wait until systemd has finished booting and sshd answers on the mgmt address."""
    deadline = time.monotonic() + timeout
    state = "starting"
    while time.monotonic() < deadline:
        pid = nspawn_pid(node.name, names)
        if pid is None:
            raise TargetError(
                f"{node.name} stopped while booting; see "
                f"{names.node_dir(node.name) / 'console.log'}"
            )
        state = system_state(pid)
        if state in ("running", "degraded") and _ssh_answers(node.mgmt.ip):
            return state
        time.sleep(0.3)
    raise TargetError(
        f"{node.name} did not finish booting in {timeout:.0f}s (state {state}); "
        f"see {names.node_dir(node.name) / 'console.log'}"
    )


def _ssh_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def stop(node: str, names: LocalNames, timeout: float = 30) -> bool:
    """Power the node off (SIGTERM to nspawn becomes SIGRTMIN+4 to systemd); True if it ran."""
    pid = nspawn_pid(node, names) or find_nspawn_pids(names).get(node)
    if pid is None:
        _cleanup_cgroups(names, node)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if _is_zombie(pid):
            break
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    if host_runs_systemd():
        run(["systemctl", "stop", f"mlsl-{names.lab}-{node}"], check=False)
    (names.node_dir(node) / "nspawn.pid").unlink(missing_ok=True)
    _cleanup_cgroups(names, node)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _cleanup_cgroups(names: LocalNames, node: str) -> None:
    for cg in _cgroup_dirs(names, node):
        if not cg.is_dir():
            continue
        for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            cg.rmdir()
    # lab and mlseclab levels, when empty
    for h in CGROUP_HIERARCHIES:
        for level in (CGROUP_ROOT / h / "mlseclab" / names.lab, CGROUP_ROOT / h / "mlseclab"):
            with contextlib.suppress(OSError):
                level.rmdir()
    propagate = Path("/run/systemd/nspawn/propagate") / names.machine(node)
    shutil.rmtree(propagate, ignore_errors=True)


__all__ = [
    "Mount",
    "ensure_rootfs",
    "ok",
    "restore_identity",
    "save_identity",
    "start",
    "stop",
    "unmount",
    "wait_ready",
    "write_identity",
]
