"""The node image: a Debian 13 root filesystem built once and cached by its inputs.

Nodes never fetch packages: everything a role installs is in the image. The roles
own their package lists (``<role>_packages`` in ``roles/<role>/defaults/main.yml``,
installed by each role's apt task, a no-op here); the image takes the union of the
lists of the roles ``site.yml`` applies to lab nodes, so each list exists once.

The build adds Debian's security and updates suites when the host's mirror is
deb.debian.org (or debootstrap's default), upgrades what debootstrap put in, and
leaves ``/etc/apt/sources.list.d/debian.sources`` on the node listing all three. A
host with another mirror (a local one) gets exactly that mirror: nothing is derived
from it, so that mirror must carry ``trixie-security`` itself.

The cache key is a hash of the suite, the package lists, the apt sources and the
customisation recipe, so a second ``up`` (or another lab) reuses the image, and a
change of any input builds a new one beside it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlseclab.errors import TargetError
from mlseclab.harden import PLAYBOOK
from mlseclab.process import run

SUITE = "trixie"

#: What debootstrap puts in: enough to boot, be reached and run apt.
BOOTSTRAP_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "sudo",
    "nftables",
    "iproute2",
    "ca-certificates",
    "locales",
)

#: Units the packages enable that a node must not run until its role says so.
DISABLED_UNITS: tuple[str, ...] = (
    "nginx.service",
    "postgresql.service",
    "prometheus.service",
    "prometheus-alertmanager.service",
    "prometheus-node-exporter.service",
    "systemd-journal-remote.socket",
    "systemd-journal-upload.service",
    "auditd.service",
    "audit-rules.service",
    "apparmor.service",
    "unattended-upgrades.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "acct.service",
    "e2scrub_all.timer",
    "fstrim.timer",
)

#: Customisation run in the new root filesystem (chroot); part of the cache key.
RECIPE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh
exit 101
' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
@APT_SOURCES@
apt-get update -qq
apt-get upgrade -y -qq -o Dpkg::Options::=--force-confold >/dev/null
apt-get install -y -qq --no-install-recommends @ROLE_PACKAGES@ >/dev/null
rm -f /usr/sbin/policy-rc.d
for unit in @DISABLED_UNITS@; do
    systemctl disable "$unit" >/dev/null 2>&1 || true
done
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
rm -f /var/lib/dbus/machine-id && ln -s /etc/machine-id /var/lib/dbus/machine-id
rm -f /etc/hostname
# no unit in a container may wait for hardware or the outside world
systemctl mask systemd-networkd-wait-online.service getty@tty1.service console-getty.service \
    systemd-firstboot.service >/dev/null 2>&1 || true
systemctl enable ssh.service >/dev/null 2>&1 || true
sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen && locale-gen >/dev/null
printf 'LANG=C.UTF-8\n' > /etc/default/locale
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /etc/resolv.conf
"""
RECIPE_VERSION = 3

#: debootstrap's mirror when the host names none; the one whose security suite is known.
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "deb.debian.org/debian-security"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCES_FILE = "/etc/apt/sources.list.d/debian.sources"


def site_role_packages(playbook: Path = PLAYBOOK) -> tuple[str, ...]:
    """The packages the roles ``site.yml`` applies to lab nodes install, sorted, once each.

    A role applied whole contributes ``<role>_packages``; a role included with
    ``tasks_from: X`` contributes ``<role>_X_packages``. Plays for the Proxmox
    hypervisors (``pve_hosts``) are not lab nodes and are left out.
    """
    roles_dir = playbook.parent
    found: set[str] = set()
    for role, var in _site_package_vars(yaml.safe_load(playbook.read_text(encoding="utf-8"))):
        defaults_file = roles_dir / role / "defaults" / "main.yml"
        defaults = yaml.safe_load(defaults_file.read_text(encoding="utf-8")) or {}
        value = defaults.get(var, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TargetError(f"{defaults_file}: {var} must be a list of package names")
        found.update(value)
    return tuple(sorted(found))


def _site_package_vars(plays: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(role, variable)`` for every role a lab-node play of site.yml applies."""
    out: list[tuple[str, str]] = []
    for play in plays:
        if "pve_hosts" in str(play.get("hosts", "")).replace("!pve_hosts", ""):
            continue
        for entry in play.get("roles", []):
            role = entry["role"] if isinstance(entry, dict) else entry
            out.append((role, f"{role}_packages"))
        for task in play.get("tasks", []):
            include = task.get("ansible.builtin.include_role") or task.get("include_role")
            if include:
                suffix = f"_{include['tasks_from']}" if include.get("tasks_from") else ""
                out.append((include["name"], f"{include['name']}{suffix}_packages"))
    return out


def apt_sources(mirror: str | None, suite: str = SUITE) -> str | None:
    """The node's ``debian.sources`` (deb822) when the mirror is Debian's own: the suite and
    ``<suite>-updates`` from it, ``<suite>-security`` from debian-security, same scheme.

    ``None`` for any other mirror: its security suite is not derived, so the sources
    debootstrap wrote (that mirror, the suite) stay as they are.
    """
    uri = (mirror or DEBIAN_MIRROR).rstrip("/")
    scheme, _, rest = uri.partition("://")
    if rest != "deb.debian.org/debian" or scheme not in ("http", "https"):
        return None
    stanza = "Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\nSigned-By: {key}\n"
    return (
        stanza.format(uri=uri, suites=f"{suite} {suite}-updates", key=DEBIAN_KEYRING)
        + "\n"
        + stanza.format(
            uri=f"{scheme}://{DEBIAN_SECURITY}", suites=f"{suite}-security", key=DEBIAN_KEYRING
        )
    )


def _sources_script(sources: str | None) -> str:
    if sources is None:
        return "# a mirror of its own: the sources debootstrap wrote stay (it must carry -security)"
    if "MLSECLAB_SOURCES" in sources:
        raise TargetError("apt sources must not contain the here-document marker")
    return (
        f"cat > {SOURCES_FILE} <<'MLSECLAB_SOURCES'\n{sources}MLSECLAB_SOURCES\n"
        f"chmod 0644 {SOURCES_FILE}\nrm -f /etc/apt/sources.list"
    )


@dataclass(frozen=True)
class ImageSpec:
    suite: str = SUITE
    packages: tuple[str, ...] = BOOTSTRAP_PACKAGES
    role_packages: tuple[str, ...] = field(default_factory=site_role_packages)
    disabled_units: tuple[str, ...] = DISABLED_UNITS
    recipe: str = RECIPE
    #: The host's Debian mirror (None: debootstrap's default, deb.debian.org).
    mirror: str | None = field(default_factory=lambda: host_mirror())

    @property
    def sources(self) -> str | None:
        return apt_sources(self.mirror, self.suite)

    def script(self) -> str:
        return (
            self.recipe.replace("@ROLE_PACKAGES@", " ".join(self.role_packages))
            .replace("@DISABLED_UNITS@", " ".join(self.disabled_units))
            .replace("@APT_SOURCES@", _sources_script(self.sources))
        )

    def key(self) -> str:
        doc = json.dumps(
            {
                "suite": self.suite,
                "packages": sorted(self.packages),
                "script": self.script(),
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


def in_chroot(root: Path, script: str, timeout: float = 600) -> None:
    """Run ``script`` with /bin/sh inside ``root``, with /proc, /sys and /dev mounted and the
    host's resolver (apt fetches from the host's mirror); everything is unmounted after."""
    mounted: list[Path] = []
    resolv = root / "etc" / "resolv.conf"
    try:
        for fs, src in (("proc", "proc"), ("sysfs", "sys"), (None, "dev"), (None, "dev/pts")):
            point = root / src
            point.mkdir(parents=True, exist_ok=True)
            if fs is None:
                run(["mount", "--bind", f"/{src}", str(point)])
            else:
                run(["mount", "-t", fs, fs, str(point)])
            mounted.append(point)
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)
        proc = run(["chroot", str(root), "/bin/sh", "-c", script], check=False, timeout=timeout)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise TargetError(
                f"customising the node image failed (exit {proc.returncode}): "
                f"{' | '.join(detail) or 'no output'}"
            )
    finally:
        for point in reversed(mounted):
            run(["umount", "--lazy", str(point)], check=False)
        resolv.unlink(missing_ok=True)


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
        """The image's root filesystem, and whether it was built just now.

        One build per key at a time: a second caller waits for the first (the lock
        is released when its process ends, however it ends) and then reuses it.
        """
        if self.ready:
            return self.rootfs, False
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f".{self.spec.key()}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.ready:
                return self.rootfs, False
            return self._build()

    def _build(self) -> tuple[Path, bool]:
        work = self.root / f".build-{self.spec.key()}-{os.getpid()}"
        for stale in self.root.glob(f".build-{self.spec.key()}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # an interrupted build: we hold the lock
        try:
            target = work / "rootfs"
            cmd = [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(self.spec.packages),
                self.spec.suite,
                str(target),
            ]
            mirror = self.spec.mirror
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
            in_chroot(target, self.spec.script(), timeout=1800)
            (work / "image.json").write_text(
                json.dumps(
                    {
                        "key": self.spec.key(),
                        "suite": self.spec.suite,
                        "packages": sorted(self.spec.packages),
                        "role_packages": sorted(self.spec.role_packages),
                        "mirror": mirror,
                        "sources": self.spec.sources,
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
