"""The local host: its routes, and the preflight that refuses an unfit host early."""

from __future__ import annotations

import ipaddress
import os
import platform
import shutil
from collections.abc import Sequence

from mlseclab.errors import PreflightError
from mlseclab.process import REQUIRED_TOOLS, run


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
