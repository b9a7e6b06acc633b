"""Running host commands, and the preflight that refuses an unfit host early."""

from __future__ import annotations

import ipaddress
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from mlseclab.errors import PreflightError, TargetError

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


def host_routes() -> list[tuple[ipaddress.IPv4Network, str]]:
    """(destination, device) of every IPv4 route in the host's main table."""
    out = run(["ip", "-4", "-o", "route", "show", "table", "main"], check=False).stdout
    routes = []
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        dest = "0.0.0.0/0" if parts[0] == "default" else parts[0]
        dev = parts[parts.index("dev") + 1] if "dev" in parts else ""
        try:
            routes.append((ipaddress.IPv4Network(dest, strict=False), dev))
        except ValueError:
            continue
    return routes


def preflight(lab_cidrs: Sequence[str], own_devices: Sequence[str]) -> None:
    """Refuse to start when the host cannot run the lab; say what to do instead."""
    problems: list[str] = []
    if platform.system() != "Linux":
        raise PreflightError(
            f"the local target needs Linux; this is {platform.system()}. "
            "Use a Debian machine or --target proxmox"
        )
    if os.geteuid() != 0:
        raise PreflightError(
            "the local target needs root (namespaces, bridges, containers); "
            "run it as root, e.g. `sudo make up`"
        )
    for tool, pkg in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing; install it with `apt-get install {pkg}`")
    for cidr in lab_cidrs:
        net = ipaddress.IPv4Network(cidr)
        for dest, dev in host_routes():
            if dev in own_devices or dest.prefixlen == 0:
                continue
            if dest.overlaps(net):
                problems.append(
                    f"lab network {cidr} collides with the host route {dest} on {dev}; "
                    "change the lab's CIDRs in the spec (networks.*.cidr, lab.local.uplink_cidr)"
                )
    if problems:
        raise PreflightError(*problems)


def is_mounted(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    with Path("/proc/self/mounts").open(encoding="utf-8") as fh:
        return any(line.split()[1] == target for line in fh)


def unmount(path: Path) -> bool:
    if is_mounted(path):
        proc = run(["umount", str(path)], check=False)
        if proc.returncode != 0:
            run(["umount", "--lazy", str(path)])
        return True
    return False
