"""The node image: a Debian 13 root filesystem built once and cached by its inputs.

Nodes never fetch packages: everything a role needs is in the image. The cache
key is a hash of the suite, the package list and the customisation recipe, so
a second ``up`` (or another lab) reuses the image, and a change of any input
builds a new one beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlseclab.errors import TargetError
from mlseclab.targets.local.host import run

SUITE = "trixie"

#: What every node needs to boot, be managed and be hardened.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "sudo",
    "nftables",
    "iproute2",
    "iputils-ping",
    "netcat-openbsd",
    "ca-certificates",
    "procps",
    "less",
    "locales",
    "kmod",
)

#: Customisation run in the new root filesystem (chroot); part of the cache key.
RECIPE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
# the operator account: key-only, sudo without a password, no password at all
id -u mlseclab >/dev/null 2>&1 || \
    useradd --create-home --shell /bin/bash --comment "mlseclab operator" mlseclab
passwd --lock mlseclab >/dev/null
install -d -m 0700 -o mlseclab -g mlseclab /home/mlseclab/.ssh
printf 'mlseclab ALL=(ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/mlseclab
chmod 0440 /etc/sudoers.d/mlseclab
visudo -cf /etc/sudoers.d/mlseclab >/dev/null
# every node gets its own host keys and machine id when it is created
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
# no unit in a container may wait for hardware or the outside world
systemctl mask systemd-networkd-wait-online.service getty@tty1.service console-getty.service \
    systemd-firstboot.service >/dev/null 2>&1 || true
systemctl enable ssh.service >/dev/null 2>&1 || true
sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen && locale-gen >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
"""
RECIPE_VERSION = 1


@dataclass(frozen=True)
class ImageSpec:
    suite: str = SUITE
    packages: tuple[str, ...] = BASE_PACKAGES
    recipe: str = RECIPE

    def key(self) -> str:
        doc = json.dumps(
            {
                "suite": self.suite,
                "packages": sorted(self.packages),
                "recipe": self.recipe,
                "version": RECIPE_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


def host_mirror(sources: Iterable[Path] | None = None) -> str | None:
    """The Debian mirror the host's own apt uses (so local mirrors and proxies apply)."""
    if sources is None:
        base = Path("/etc/apt")
        sources = [base / "sources.list", *sorted((base / "sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for match in re.finditer(r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.M):
            uri = match.group(1).rstrip("/")
            if uri.startswith(("http://", "https://", "file:/")) and not uri.endswith("-security"):
                return uri
    return None


class ImageCache:
    """Images under ``<root>/<key>/rootfs``; a finished one has ``<root>/<key>/image.json``."""

    def __init__(self, root: Path, spec: ImageSpec | None = None) -> None:
        self.root = root
        self.spec = spec or ImageSpec()

    @property
    def dir(self) -> Path:
        return self.root / self.spec.key()

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def ready(self) -> bool:
        return (self.dir / "image.json").is_file() and self.rootfs.is_dir()

    def ensure(self) -> tuple[Path, bool]:
        """The image's root filesystem, and whether it was built just now."""
        if self.ready:
            return self.rootfs, False
        self.root.mkdir(parents=True, exist_ok=True)
        work = self.root / f".build-{self.spec.key()}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        for stale in self.root.glob(f".build-{self.spec.key()}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # an interrupted build
        try:
            target = work / "rootfs"
            cmd = [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(self.spec.packages),
                self.spec.suite,
                str(target),
            ]
            mirror = host_mirror()
            if mirror:
                cmd.append(mirror)
            proc = run(cmd, check=False, timeout=1800)
            if proc.returncode != 0:
                log = target / "debootstrap" / "debootstrap.log"
                tail = (
                    log.read_text(errors="replace").strip().splitlines()[-3:]
                    if log.exists()
                    else []
                )
                raise TargetError(
                    f"building the node image failed (debootstrap {self.spec.suite}, exit "
                    f"{proc.returncode}): {' | '.join(tail) or proc.stderr.strip()[-300:]}; "
                    "check that the Debian mirror in /etc/apt/sources.list is reachable"
                )
            run(["chroot", str(target), "/bin/sh", "-c", self.spec.recipe], timeout=600)
            (work / "image.json").write_text(
                json.dumps(
                    {
                        "key": self.spec.key(),
                        "suite": self.spec.suite,
                        "packages": sorted(self.spec.packages),
                        "mirror": mirror,
                    },
                    indent=2,
                )
                + "\n",
                encoding="utf-8",
            )
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            if self.dir.exists():
                shutil.rmtree(self.dir)
            work.rename(self.dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.rootfs, True
