"""Run the posture suite against a lab: one pytest process per node, all at once.

Each process checks one node over its own SSH connection (reused through the
lab's ControlMaster) and writes its results as JSON; one more process runs the
checks that belong to the lab rather than to a node (the operator's view). The
results are merged into a :class:`PostureRun`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlseclab import checkout
from mlseclab.posture.plugin import FRAMEWORKS, LAB_SCOPE
from mlseclab.posture.results import FAILING, CheckResult, Outcome


@dataclass
class ScopeRun:
    """One pytest process: a node, or the lab scope."""

    scope: str
    returncode: int
    seconds: float
    results: list[CheckResult]
    output: str  # pytest's own output, for a run that produced no results

    @property
    def counts(self) -> Counter[Outcome]:
        return Counter(r.outcome for r in self.results)


@dataclass
class PostureRun:
    lab: str
    started: str
    seconds: float
    scopes: list[ScopeRun] = field(default_factory=list)

    @property
    def results(self) -> list[CheckResult]:
        return [r for s in self.scopes for r in s.results]

    @property
    def broken_scopes(self) -> list[ScopeRun]:
        """Runs that crashed or collected nothing: their checks did not run at all."""
        return [s for s in self.scopes if s.returncode not in (0, 1) or not s.results]

    @property
    def counts(self) -> Counter[Outcome]:
        return Counter(r.outcome for r in self.results)

    @property
    def passed(self) -> bool:
        c = self.counts
        return not any(c[o] for o in FAILING) and not self.broken_scopes and bool(self.results)

    def by_node(self) -> dict[str, Counter[Outcome]]:
        out: dict[str, Counter[Outcome]] = {}
        for r in self.results:
            out.setdefault(r.node, Counter())[r.outcome] += 1
        return dict(sorted(out.items(), key=lambda kv: (kv[0] == LAB_SCOPE, kv[0])))

    def by_framework(self) -> dict[str, dict[str, Counter[Outcome]]]:
        """framework -> control id -> outcomes, over every check that names the id."""
        out: dict[str, dict[str, Counter[Outcome]]] = {}
        for r in self.results:
            for fw in ("lab", *FRAMEWORKS):
                for cid in r.controls.get(fw, ()):
                    out.setdefault(fw, {}).setdefault(cid, Counter())[r.outcome] += 1
        return {
            fw: dict(sorted(ids.items(), key=lambda kv: _natural(kv[0]))) for fw, ids in out.items()
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "started": self.started,
            "seconds": round(self.seconds, 2),
            "passed": self.passed,
            "counts": dict(self.counts),
            "nodes": {n: dict(c) for n, c in self.by_node().items()},
            "frameworks": {
                fw: {cid: dict(c) for cid, c in ids.items()}
                for fw, ids in self.by_framework().items()
            },
            "broken": [
                {"scope": s.scope, "returncode": s.returncode, "output": s.output[-4000:]}
                for s in self.broken_scopes
            ],
            "results": [r.as_dict() for r in self.results],
        }


def _natural(text: str) -> list[Any]:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


UNREACHABLE = -2  # the returncode of a node's run that could not start: no SSH to the node


def _unreachable(ssh_config: Path, node: str) -> str:
    """Why ``node`` cannot be reached over SSH ("" when it can)."""
    try:
        proc = subprocess.run(
            ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", node, "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "no answer within 30 s"
    if proc.returncode == 0:
        return ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Authorised use" not in ln]
    return lines[-1].strip() if lines else f"ssh exited {proc.returncode}"


def pytest_command(
    spec_path: Path, state: Path, results: Path, node: str | None, extra: Sequence[str] = ()
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(checkout.posture_suite()),
        "-p",
        "no:pytest11.testinfra",  # our plugin provides the host fixture
        "-p",
        "no:cacheprovider",
        "-p",
        "mlseclab.posture.plugin",
        "--mlseclab-spec",
        str(spec_path),
        "--mlseclab-state",
        str(state),
        "--mlseclab-results",
        str(results),
        "-q",
        "--no-header",
        "-o",
        "addopts=",  # the project's own pytest options are for its test suite, not this one
        "--strict-markers",
    ]
    if node is None:
        cmd += ["--mlseclab-lab-scope"]
    else:
        cmd += ["--mlseclab-node", node]
    return [*cmd, *extra]


def run_posture(
    *,
    lab: str,
    spec_path: Path,
    state: Path,
    nodes: Sequence[str],
    include_lab_scope: bool = True,
    extra: Sequence[str] = (),
    on_scope_done: Callable[[ScopeRun], None] | None = None,
    timeout: float = 900,
) -> PostureRun:
    """Run every check on ``nodes`` (and the lab-scope checks) in parallel processes."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.monotonic()
    scopes: list[str | None] = [*nodes, *([None] if include_lab_scope else [])]
    run = PostureRun(lab=lab, started=started, seconds=0.0)
    with tempfile.TemporaryDirectory(prefix="mlseclab-verify-") as tmp:

        def one(scope: str | None) -> ScopeRun:
            if scope is not None and (down := _unreachable(state / "ssh_config", scope)):
                # one finding for the node, not one per check
                done = ScopeRun(scope, UNREACHABLE, 0.0, [], f"unreachable over SSH: {down}")
                if on_scope_done:
                    on_scope_done(done)
                return done
            results = Path(tmp) / f"{scope or LAB_SCOPE}.json"
            cmd = pytest_command(spec_path, state, results, scope, extra)
            s0 = time.monotonic()
            try:
                proc = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                    cwd=checkout.root(),
                    env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                )
                rc, output = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as exc:
                rc, output = -1, f"timed out after {timeout:.0f}s: {exc}"
            raw = json.loads(results.read_text(encoding="utf-8")) if results.exists() else []
            data = [CheckResult.from_dict(r) for r in raw]
            if scope is not None:
                data = [r for r in data if r.node == scope]
            done = ScopeRun(
                scope=scope or LAB_SCOPE,
                returncode=rc,
                seconds=time.monotonic() - s0,
                results=data,
                output=output,
            )
            if on_scope_done:
                on_scope_done(done)
            return done

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(scopes) or 1) as pool:
            run.scopes = list(pool.map(one, scopes))
    run.seconds = time.monotonic() - t0
    return run
