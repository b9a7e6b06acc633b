"""Labs for tests: specs derived from the reference lab, and leftover detection."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from mlseclab.spec import LabSpec, load_spec, parse_spec
from mlseclab.targets.local.names import LocalNames

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "inventories" / "reference" / "lab.yaml"
SPECS = ROOT / "tests" / "specs"


def reference_text() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def derived_lab_text(name: str, second_octet: int, datasets_root: Path) -> str:
    """The reference lab renamed and moved to 10.<second_octet>.x.x, data under ``datasets_root``.

    Tests use it so that they never collide with a reference lab a user has up.
    """
    text = reference_text()
    text = re.sub(r"(?m)^  name: reference$", f"  name: {name}", text)
    text = text.replace("10.66.", f"10.{second_octet}.")
    text = text.replace("datasets_root: /var/lib/mlseclab", f"datasets_root: {datasets_root}")
    assert f"name: {name}" in text and f"10.{second_octet}." in text
    return text


def write_lab(directory: Path, text: str, *, corpus: bool = False) -> Path:
    """``text`` as ``directory/lab.yaml``; with ``corpus``, the reference lab's RAG corpus
    beside it (up copies a spec's ``corpus/`` into the corpora dataset)."""
    path = directory / "lab.yaml"
    path.write_text(text, encoding="utf-8")
    if corpus:
        shutil.copytree(REFERENCE.parent / "corpus", directory / "corpus", dirs_exist_ok=True)
    return path


def load_text(text: str, file: str = "lab.yaml") -> LabSpec:
    return parse_spec(text, file)


def leftovers(names: LocalNames) -> list[str]:
    """Everything on this host that carries the lab's name: must be empty after down."""
    found: list[str] = []
    netns = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    found += [
        f"netns {line.split()[0]}"
        for line in netns.splitlines()
        if line.startswith(names.netns_prefix)
    ]
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    if names.host_uplink + ":" in links or names.host_uplink + "@" in links:
        found.append(f"link {names.host_uplink}")
    routes = subprocess.run(
        ["ip", "route", "show"], capture_output=True, text=True, check=False
    ).stdout
    found += [f"route {r}" for r in routes.splitlines() if names.host_uplink in r]
    mounts = Path("/proc/self/mounts").read_text(encoding="utf-8")
    found += [
        f"mount {m.split()[1]}" for m in mounts.splitlines() if str(names.lab_dir) in m.split()[1]
    ]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "systemd-nspawn" in cmd and f"/run/netns/{names.netns_prefix}" in cmd:
            found.append(f"process {proc.name}: {cmd[:80]}")
    for hierarchy in ("systemd", "unified"):
        cg = Path("/sys/fs/cgroup") / hierarchy / "mlseclab" / names.lab
        if cg.exists():
            found.append(f"cgroup {cg}")
    if (names.lab_dir / "nodes").exists():
        found.append(f"directory {names.lab_dir / 'nodes'}")
    return found


def mlseclab(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would (a separate process), capturing its output."""
    exe = Path(sys.executable).with_name("mlseclab")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )


@contextlib.contextmanager
def running_lab(spec: Path, state_dir: Path, *, harden: bool = False) -> Iterator[LabSpec]:
    """Stand the lab at ``spec`` up and always take it down again, also when a test fails.

    Leftovers of an earlier crashed run of the same lab are cleared first; both downs
    purge the lab's data and its dataset snapshots. Without ``harden`` the lab is only
    provisioned (``up --no-harden``).
    """
    lab = load_spec(spec)
    env = {"MLSECLAB_STATE_DIR": str(state_dir)}
    purge = ("down", "--force", "--purge-data", "--purge-snapshots", "--yes", "-f", str(spec))
    mlseclab(*purge, env=env)
    try:
        # hardening and verifying five nodes takes 6-10 min on 2 busy cores: allow an hour
        up = mlseclab(
            "up",
            *(() if harden else ("--no-harden",)),
            "-f",
            str(spec),
            env=env,
            timeout=3600 if harden else 900,
        )
        assert up.returncode == 0, up.stderr[-3000:]
        yield lab
    finally:
        down = mlseclab(*purge, env=env)
        assert down.returncode == 0, down.stderr[-3000:]
