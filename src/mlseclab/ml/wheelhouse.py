"""The inference node's Python packages: a wheelhouse built once on the operator's machine.

Nodes never reach a package index. ``llama-cpp-python`` ships only as a source
distribution, so its wheels (and the wheels of all its dependencies) are built
here, once, for the node image's own Python, inside a throwaway overlay of the
image's root filesystem (the image itself stays untouched and compiler-free).
The result is cached under ``<cache_root>/<key>/``::

    *.whl              every wheel the server needs
    requirements.txt   ``name==version --hash=sha256:...`` for every wheel
    wheelhouse.json    what was built, from what, with which flags

and a node installs it with::

    pip install --no-index --find-links DIR --require-hashes --only-binary :all: \
        -r DIR/requirements.txt

The key is a hash of what the wheels depend on, and nothing else: the image's
suite, the versions of the packages the wheels are built against or link
(python3, libc6, libgomp1 and the build packages, as recorded in the image's
``/var/lib/dpkg/status``), the package spec, the build flags and RECIPE_VERSION.
A new image that only adds or changes role packages (nginx, sysstat, ...) keeps
the wheelhouse; a new Python, C library or pin builds a new one beside the old.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlseclab.digest import sha256_file
from mlseclab.errors import TargetError
from mlseclab.process import mount_overlay, run, unmount
from mlseclab.spec import DATASETS_ROOT
from mlseclab.targets.local.image import in_chroot

DEFAULT_CACHE = Path(DATASETS_ROOT) / "wheelhouse"

#: The inference server and its OpenAI-compatible HTTP front end.
PACKAGE_SPEC = "llama-cpp-python[server]==0.3.36"
#: Portable build: the default ``-march=native`` may use AVX-512 that a node's CPU lacks.
CMAKE_ARGS = "-DGGML_NATIVE=OFF"
#: Bumped when the build recipe changes in a way that changes the wheels.
RECIPE_VERSION = 1
#: Packages the build needs in the overlay (never in the image).
BUILD_PACKAGES = ("build-essential", "cmake", "python3-venv", "python3-dev")

#: Where the build happens inside the overlay.
_IN_ROOT = "/root/mlseclab-wheelhouse"
#: Packages of the image whose versions the wheels depend on (the build packages are
#: installed in the overlay only, so the image's status file usually lacks them).
WHEEL_DEPENDS = ("python3", "libc6", "libgomp1", *BUILD_PACKAGES)
DPKG_STATUS = Path("var/lib/dpkg/status")
_HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")

_BUILD_SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
cd @IN_ROOT@
exec >>build.log 2>&1
echo "== apt: @BUILD_PACKAGES@ ($(date -u +%FT%TZ))"
apt-get update -qq
apt-get install -y -qq --no-install-recommends @BUILD_PACKAGES@ >/dev/null
echo "== venv ($(python3 --version))"
python3 -m venv build-venv
echo "== pip wheel @PACKAGE_SPEC@ CMAKE_ARGS=@CMAKE_ARGS@ ($(date -u +%FT%TZ))"
CMAKE_ARGS='@CMAKE_ARGS@' CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    build-venv/bin/pip wheel --no-cache-dir --progress-bar off \
    --wheel-dir wheels '@PACKAGE_SPEC@'
echo "== built ($(date -u +%FT%TZ))"
"""

_CHECK_SCRIPT = r"""
set -eu
cd @IN_ROOT@
exec >>build.log 2>&1
echo "== check: install as a node would ($(date -u +%FT%TZ))"
python3 -m venv check-venv
check-venv/bin/pip install --no-index --find-links wheels --require-hashes \
    --only-binary :all: --progress-bar off -r wheels/requirements.txt
check-venv/bin/python -c 'import llama_cpp, llama_cpp.server.app as a; print(a.__name__, "ok")'
python3 -c 'import sys; print("python", sys.version.split()[0])' > python-version
echo "== check ok ($(date -u +%FT%TZ))"
"""


@dataclass(frozen=True)
class Wheel:
    """One wheel of the wheelhouse: its file, project name, version and sha256."""

    file: str
    name: str
    version: str
    sha256: str


def installed_versions(status: str, names: Iterable[str]) -> dict[str, str | None]:
    """The installed version of each of ``names`` in a dpkg status file's text.

    ``None`` for a package that is not installed (absent, removed, config files only).
    A package installed for several architectures reads ``amd64:1.0,i386:1.0``.
    """
    wanted = set(names)
    found: dict[str, list[str]] = {}
    for paragraph in re.split(r"\n\s*\n", status):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # a continuation line (Description, Conffiles) or noise
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        name = fields.get("Package")
        if name not in wanted or fields.get("Status", "").split()[-1:] != ["installed"]:
            continue
        found.setdefault(name, []).append(f"{fields.get('Architecture', '')}:{fields['Version']}")
    versions: dict[str, str | None] = {}
    for name in sorted(wanted):
        archs = sorted(found.get(name, []))
        if not archs:
            versions[name] = None
        elif len(archs) == 1:
            versions[name] = archs[0].split(":", 1)[1]
        else:
            versions[name] = ",".join(archs)
    return versions


def os_codename(os_release: str) -> str:
    """``VERSION_CODENAME`` of an os-release file's text (``""`` when it has none)."""
    match = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)\"?$", os_release, re.M)
    return match[1] if match else ""


def wheelhouse_key(
    suite: str,
    versions: dict[str, str | None],
    package_spec: str = PACKAGE_SPEC,
    cmake_args: str = CMAKE_ARGS,
) -> str:
    """The cache key: what the wheels depend on (the suite, the versions of WHEEL_DEPENDS in
    the image, the pin, the build flags, the recipe), not the whole image."""
    doc = json.dumps(
        {
            "suite": suite,
            "versions": versions,
            "spec": package_spec,
            "cmake_args": cmake_args,
            "build_packages": list(BUILD_PACKAGES),
            "recipe": RECIPE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel(path: Path) -> Wheel:
    """Name, version and sha256 of a wheel file; TargetError if it is not a wheel."""
    match = _WHEEL_RE.match(path.name)
    if not match:
        raise TargetError(f"{path.name} is not a wheel file name (name-version-tags.whl)")
    return Wheel(
        file=path.name,
        name=normalize_name(match["name"]),
        version=match["version"],
        sha256=sha256_file(path),
    )


def render_requirements(wheels: Iterable[Wheel]) -> str:
    """``requirements.txt`` pinning every wheel by version and sha256 (sorted by name)."""
    lines = [
        "# Generated by mlseclab: install with",
        "#   pip install --no-index --find-links DIR --require-hashes --only-binary :all: \\",
        "#       -r DIR/requirements.txt",
    ]
    seen: dict[str, Wheel] = {}
    for wheel in sorted(wheels, key=lambda w: (w.name, w.version)):
        if wheel.name in seen:
            raise TargetError(
                f"the wheelhouse holds two wheels of {wheel.name} "
                f"({seen[wheel.name].file}, {wheel.file}); delete it and build again"
            )
        seen[wheel.name] = wheel
        lines.append(f"{wheel.name}=={wheel.version} \\\n    --hash=sha256:{wheel.sha256}")
    return "\n".join(lines) + "\n"


def write_requirements(wheel_dir: Path) -> list[Wheel]:
    """Write ``requirements.txt`` for every ``*.whl`` in ``wheel_dir``; refuse anything else."""
    others = [
        p.name
        for p in wheel_dir.iterdir()
        if p.is_file() and p.suffix != ".whl" and p.name != "requirements.txt"
    ]
    if others:
        raise TargetError(
            f"the wheelhouse build left non-wheel files ({', '.join(sorted(others))}); "
            "nodes install binaries only"
        )
    wheels = [parse_wheel(p) for p in sorted(wheel_dir.glob("*.whl"))]
    if not wheels:
        raise TargetError("the wheelhouse build produced no wheels")
    (wheel_dir / "requirements.txt").write_text(render_requirements(wheels), encoding="utf-8")
    return wheels


def read_requirements(text: str) -> dict[str, tuple[str, str]]:
    """``{name: (version, sha256)}`` from a requirements file written by this module."""
    out: dict[str, tuple[str, str]] = {}
    joined = re.sub(r"\\\n\s*", " ", text)
    for raw in joined.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
        if not match:
            raise TargetError(f"requirements line is not `name==version --hash=sha256:…`: {line}")
        out[normalize_name(match[1])] = (match[2], match[3])
    return out


def wheel_depends(image_rootfs: Path) -> tuple[str, dict[str, str | None]]:
    """The image's suite and the versions of WHEEL_DEPENDS, read from its root filesystem."""
    try:
        status = (image_rootfs / DPKG_STATUS).read_text(encoding="utf-8", errors="replace")
        release = (image_rootfs / "etc" / "os-release").read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(
            f"{image_rootfs} has no readable dpkg status or os-release ({exc.strerror}); "
            "build the image again (`mlseclab up` does)"
        ) from None
    return os_codename(release), installed_versions(status, WHEEL_DEPENDS)


def _fill(script: str, package_spec: str, cmake_args: str) -> str:
    for bad in ("'", "\n"):
        if bad in package_spec or bad in cmake_args:
            raise TargetError(f"package spec and build flags must not contain {bad!r}")
    return (
        script.replace("@IN_ROOT@", _IN_ROOT)
        .replace("@BUILD_PACKAGES@", " ".join(BUILD_PACKAGES))
        .replace("@PACKAGE_SPEC@", package_spec)
        .replace("@CMAKE_ARGS@", cmake_args)
    )


def _chroot_env_script(script_path: str) -> str:
    """Run a script in the chroot with a clean environment (no host PIP_* settings leak in)
    and the host's CA bundle for pip (the host may sit behind a TLS-inspecting proxy)."""
    return (
        "exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        "HOME=/root LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "
        f"PIP_CERT={_IN_ROOT}/ca.crt SSL_CERT_FILE={_IN_ROOT}/ca.crt "
        f"REQUESTS_CA_BUNDLE={_IN_ROOT}/ca.crt /bin/sh {script_path}"
    )


def _tail(log: Path, limit: int = 240) -> str:
    """The log's last line (pip's and apt's last line names the problem), shortened."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= limit else last[: limit - 1] + "…"


def _keep_log(build_log: Path, log: Path) -> None:
    if build_log.exists():
        shutil.copyfile(build_log, log)


def ensure_wheelhouse(
    image_rootfs: Path,
    cache_root: Path = DEFAULT_CACHE,
    *,
    package_spec: str = PACKAGE_SPEC,
    cmake_args: str = CMAKE_ARGS,
    timeout: float = 3600,
) -> Path:
    """The directory of wheels (with ``requirements.txt``) for the image at ``image_rootfs``.

    Built on first use (5-27 minutes: llama.cpp is compiled), cached afterwards, keyed by
    :func:`wheelhouse_key` on the image's suite and the versions of WHEEL_DEPENDS in its
    dpkg status, so an image that differs only in other packages reuses it. The build
    log is kept at ``<cache_root>/logs/<key>.log``.
    """
    image_rootfs = image_rootfs.resolve()
    if not (image_rootfs / "usr" / "bin" / "python3").exists():
        raise TargetError(
            f"{image_rootfs} is not a node image root filesystem (no usr/bin/python3); "
            "build the image first (`mlseclab up` does)"
        )
    suite, versions = wheel_depends(image_rootfs)
    key = wheelhouse_key(suite, versions, package_spec, cmake_args)
    final = cache_root / key
    if (final / "wheelhouse.json").is_file() and (final / "requirements.txt").is_file():
        write_archive(final)
        return final

    cache_root.mkdir(parents=True, exist_ok=True)
    logs = cache_root / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{key}.log"
    for other in cache_root.glob(f".build-{key}-*"):
        pid = other.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            raise TargetError(
                f"another wheelhouse build is running (pid {pid}, {other}); wait for it to "
                "finish, then run again"
            )
        _cleanup_build_dir(other)  # an interrupted build
    work = cache_root / f".build-{key}-{os.getpid()}"
    upper, ovl_work, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, ovl_work, merged):
        d.mkdir(parents=True)
    started = time.monotonic()
    try:
        mount_overlay(image_rootfs, upper, ovl_work, merged)
        inside = merged / _IN_ROOT.lstrip("/")
        inside.mkdir(parents=True)
        if _HOST_CA.is_file():
            shutil.copyfile(_HOST_CA, inside / "ca.crt")
        else:
            shutil.copyfile(merged / "etc/ssl/certs/ca-certificates.crt", inside / "ca.crt")
        (inside / "build.sh").write_text(
            _fill(_BUILD_SCRIPT, package_spec, cmake_args), encoding="utf-8"
        )
        (inside / "check.sh").write_text(
            _fill(_CHECK_SCRIPT, package_spec, cmake_args), encoding="utf-8"
        )
        build_log = inside / "build.log"
        try:
            in_chroot(merged, _chroot_env_script(f"{_IN_ROOT}/build.sh"), timeout=timeout)
        except TargetError as exc:
            _keep_log(build_log, log)
            raise TargetError(
                f"building the inference wheelhouse ({package_spec}) failed: "
                f"{_tail(build_log) or exc}; full log: {log} — check that PyPI and the "
                "Debian mirror are reachable, then run again"
            ) from None
        wheels = write_requirements(inside / "wheels")
        try:
            in_chroot(merged, _chroot_env_script(f"{_IN_ROOT}/check.sh"), timeout=600)
        except TargetError as exc:
            _keep_log(build_log, log)
            raise TargetError(
                f"the inference wheelhouse does not install offline: {_tail(build_log) or exc}; "
                f"full log: {log}"
            ) from None
        _keep_log(build_log, log)
        python = (inside / "python-version").read_text(encoding="utf-8").strip()
        unmount(merged)
        out = work / "out"
        shutil.move(str(upper / _IN_ROOT.lstrip("/") / "wheels"), out)
        (out / "wheelhouse.json").write_text(
            json.dumps(
                {
                    "key": key,
                    "image": image_rootfs.parent.name,
                    "suite": suite,
                    "versions": versions,
                    "package_spec": package_spec,
                    "cmake_args": cmake_args,
                    "python": python,
                    "build_seconds": round(time.monotonic() - started, 1),
                    "wheels": {w.file: w.sha256 for w in wheels},
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        write_archive(out)
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
    finally:
        _cleanup_build_dir(work)
    return final


ARCHIVE = "wheelhouse.tar"


def write_archive(wheel_dir: Path) -> Path:
    """``wheelhouse.tar`` beside the wheels: one file to copy to a node instead of dozens
    (wheels are compressed already, so the tar is not). Entries are sorted and carry no
    owner or time, so the same wheels give the same archive; rewritten only if missing."""
    archive = wheel_dir / ARCHIVE
    if archive.is_file():
        return archive
    tmp = wheel_dir / f".{ARCHIVE}.partial"
    members = [
        *sorted(p for p in wheel_dir.iterdir() if p.suffix == ".whl"),
        wheel_dir / "requirements.txt",
    ]
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in members:
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    tmp.replace(archive)
    return archive


def _cleanup_build_dir(work: Path) -> None:
    """Unmount whatever a build left mounted under ``work`` (innermost first), then delete it."""
    merged = work / "merged"
    for sub in ("dev/pts", "dev", "sys", "proc"):
        unmount(merged / sub)
    unmount(merged)
    if run(["mountpoint", "-q", str(merged)], check=False).returncode == 0:
        raise TargetError(
            f"{merged} is still mounted; unmount it (`umount --lazy {merged}`) and delete {work}"
        )
    shutil.rmtree(work, ignore_errors=True)
