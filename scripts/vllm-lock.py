#!/usr/bin/env python3
"""Pin vLLM and every dependency by version and sha256 for the inference role.

    python3.13 scripts/vllm-lock.py [--version 0.33.0]      # rewrite the lock file
    python3 scripts/vllm-lock.py --download DIR              # the locked wheels, for a wheelhouse

The lock (roles/inference/files/vllm-requirements.txt) is what the role installs with
``pip install --require-hashes --only-binary :all: --no-deps -r``. It is resolved for the
inference nodes, not for this machine: CPython 3.13 (Debian 13), linux x86_64, glibc 2.41.
pip resolves without installing or downloading a wheel (``--dry-run --report``: it reads
only the wheels' metadata) and the report carries each wheel's sha256 from the index.

pip evaluates environment markers (``python_version < "3.12"``) against the interpreter that
runs it, so the lock must be made by a CPython 3.13 on linux x86_64; the script refuses any
other. ``--download`` fetches exactly the locked wheels (hash-checked) into DIR for the
role's ``inference_vllm_wheelhouse_src``; any Python 3 can run it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "roles" / "inference" / "files" / "vllm-requirements.txt"
VERSION = "0.33.0"
INDEX = "https://pypi.org/simple"
PYTHON = "3.13"
GLIBC_MINOR = 41  # Debian 13 (trixie): glibc 2.41

# Every platform tag a Debian 13 x86_64 node accepts, newest first. pip does not expand
# manylinux_2_x tags to older ones by itself.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 16, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)( --hash=sha256:[0-9a-f]{64})+$")


def target_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp"]
    args += ["--abi", "cp" + PYTHON.replace(".", "")]
    for tag in PLATFORMS:
        args += ["--platform", tag]
    return args


def pip(command: str, index: str) -> list[str]:
    """pip COMMAND, ignoring this machine's pip configuration (a find-links would leak in)."""
    cmd = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check"]
    if os.environ.get("PIP_CERT"):  # --isolated drops it; a proxy may need the system CAs
        cmd += ["--cert", os.environ["PIP_CERT"]]
    return [*cmd, command, "--index-url", index]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(version: str, index: str) -> list[tuple[str, str, str, str]]:
    """(name, version, wheel file, sha256) of vLLM and every dependency, sorted by name."""
    here = (sys.implementation.name, sys.version_info[:2], sys.platform, platform.machine())
    if here != ("cpython", (3, 13), "linux", "x86_64"):
        sys.exit(
            f"vllm-lock: run me with CPython {PYTHON} on linux x86_64 (markers are evaluated "
            f"for the running interpreter; this is {here[0]} {here[1][0]}.{here[1][1]} on "
            f"{here[2]} {here[3]}), e.g. `python3.13 {sys.argv[0]}` or inside a Debian 13 "
            "container"
        )
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [*pip("install", index), "--dry-run", "--ignore-installed", "--quiet"]
        cmd += ["--report", str(report), *target_args(), f"vllm=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            sys.exit(f"vllm-lock: pip could not resolve vllm=={version}: {tail}")
        data = json.loads(report.read_text(encoding="utf-8"))
    pinned: dict[str, tuple[str, str, str, str]] = {}
    for item in data["install"]:
        name, ver = item["metadata"]["name"], item["metadata"]["version"]
        url = item["download_info"]["url"]
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256", "")
        wheel = url.rsplit("/", 1)[-1]
        if not wheel.endswith(".whl") or not url.startswith("https://"):
            sys.exit(f"vllm-lock: {name} {ver} resolved to {url}, not a wheel from the index")
        if not SHA256.match(digest):
            sys.exit(f"vllm-lock: the index gave no sha256 for {wheel}")
        pinned[canonical(name)] = (canonical(name), ver, wheel, digest)
    if pinned.get("vllm", ("", ""))[1] != version:
        sys.exit(f"vllm-lock: the resolution does not contain vllm=={version}")
    return [pinned[k] for k in sorted(pinned)]


def render(version: str, index: str, pins: list[tuple[str, str, str, str]]) -> str:
    pip_version = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    head = [
        f"# vllm=={version} and every dependency: {len(pins)} wheels for CPython {PYTHON},",
        f"# linux x86_64, glibc 2.{GLIBC_MINOR} (Debian 13), each pinned by version and sha256.",
        f"# Resolved from {index} by scripts/vllm-lock.py (pip {pip_version}, --dry-run:",
        "# nothing downloaded). Regenerate with: python3.13 scripts/vllm-lock.py --version X.Y.Z",
        "# Installed by roles/inference (inference_engine: vllm) with",
        "#   pip install --require-hashes --only-binary :all: --no-deps -r vllm-requirements.txt",
    ]
    body = [f"{name}=={ver} --hash=sha256:{digest}" for name, ver, _wheel, digest in pins]
    return "\n".join(head + body) + "\n"


def read_lock(path: Path) -> list[str]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    reqs = [ln for ln in lines if not ln.startswith("#")]
    for ln in reqs:
        if not LINE.match(ln):
            sys.exit(f"vllm-lock: {path}: not pinned with a sha256: {ln}")
    return reqs


def download(lock: Path, dest: Path, index: str) -> None:
    read_lock(lock)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [*pip("download", index), "--no-deps", "--require-hashes", *target_args()]
    cmd += ["--dest", str(dest), "-r", str(lock)]
    if subprocess.run(cmd, check=False).returncode != 0:
        sys.exit("vllm-lock: pip download failed (the lines above say why)")
    wheels = sorted(p.name for p in dest.glob("*.whl"))
    print(f"{len(wheels)} wheels in {dest}; set inference_vllm_wheelhouse_src: {dest}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=VERSION, help=f"vLLM release (default {VERSION})")
    parser.add_argument(
        "--index-url",
        default=os.environ.get("PIP_INDEX_URL", INDEX),
        help="package index (default $PIP_INDEX_URL or PyPI); a mirror must serve PyPI's files",
    )
    parser.add_argument("--lock", type=Path, default=LOCK, help=f"lock file (default {LOCK})")
    parser.add_argument("--download", type=Path, metavar="DIR", help="fetch the locked wheels")
    args = parser.parse_args()
    if args.download:
        download(args.lock, args.download, args.index_url)
        return 0
    pins = resolve(args.version, args.index_url)
    args.lock.write_text(render(args.version, args.index_url, pins), encoding="utf-8")
    print(f"{args.lock}: vllm=={args.version}, {len(pins)} packages, every one hash-pinned")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
