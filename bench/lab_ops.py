"""Benchmark what a hardened lab costs: converge, re-converge, check, verify, drift, rebuild.

    .venv/bin/python -m bench.lab_ops [--keep]

Stands the reference lab up renamed ``opsbench`` on 10.89.0.0/16 with its own
state, data and reports, then times, each through the real CLI:

- first converge: ``up`` (provision, harden, verify) on a fresh lab;
- re-converge: ``harden`` on the hardened lab (must report changed=0);
- check mode: ``harden --check`` (must report changed=0);
- verify: ``verify`` on every node, in parallel;
- drift: ``drift`` with its three layers on a clean lab (must report no drift);
- rebuild one node: ``rebuild vectordb-01`` (re-create, re-harden).

It also counts the posture checks per node role and per framework from the
verify report. Results: ``bench/results/lab_ops-<timestamp>.json`` and a table.
One run takes about 25 minutes on 2 cores.

    .venv/bin/python -m bench.lab_ops --existing inventories/reference/lab.yaml

times the same steps but the first converge on a lab that is already up and
hardened, and leaves it up (the rebuilt node is re-hardened and verified).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.record import write_result  # noqa: E402
from helpers.labs import derived_lab_text, write_lab  # noqa: E402


def timed(*args: str, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    exe = Path(sys.executable).with_name("mlseclab")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(exe), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(
            f"`mlseclab {' '.join(args)}` exited {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        )
    return took, proc.stdout


def _changed(stdout: str) -> int:
    return sum(int(h["changed"]) for h in json.loads(stdout)["hosts"].values())


def counts(report: Path) -> dict[str, dict[str, int]]:
    data = json.loads(report.read_text(encoding="utf-8"))
    per_role: Counter[str] = Counter()
    checks_per_role: dict[str, set[str]] = {}
    for r in data["results"]:
        checks_per_role.setdefault(r["role"], set()).add(r["check"])
    for role, checks in checks_per_role.items():
        per_role[role] = len(checks)
    per_framework = {
        fw: sum(sum(c.values()) for c in ids.values()) for fw, ids in data["frameworks"].items()
    }
    ids_per_framework = {fw: len(ids) for fw, ids in data["frameworks"].items()}
    return {
        "checks per node role (distinct checks)": dict(per_role),
        "check results per framework": per_framework,
        "control ids per framework": ids_per_framework,
        "results": dict(data["counts"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument(
        "--existing", type=Path, metavar="SPEC", help="a lab that is up and hardened: no up/down"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the local target needs root")
    base = Path(tempfile.mkdtemp(prefix="mlseclab-opsbench-"))
    reports = base / "reports"
    env = {**os.environ, "MLSECLAB_REPORTS_DIR": str(reports)}
    if args.existing:
        spec = args.existing.resolve()
        args.keep = True
    else:
        spec = write_lab(base, derived_lab_text("opsbench", 89, base / "data"))
        env["MLSECLAB_STATE_DIR"] = str(base / "state")
    s = ["-f", str(spec)]
    down = ("down", "--force", "--purge-data", "--purge-snapshots", "--yes", *s)
    out: dict[str, float] = {}
    facts: dict[str, object] = {}
    lab = "opsbench"
    try:
        if not args.existing:
            timed(*down, env=env)
            out["first converge (up: provision, harden, verify)"], _ = timed("up", *s, env=env)
        else:
            from mlseclab.spec import load_spec

            lab = load_spec(spec).lab.name
        took, stdout = timed("harden", "--json", *s, env=env)
        out["re-converge (harden)"] = took
        facts["re-converge changed"] = _changed(stdout)
        took, stdout = timed("harden", "--check", "--json", *s, env=env)
        out["check mode (harden --check)"] = took
        facts["check mode changed"] = _changed(stdout)
        out["verify (all nodes)"], _ = timed("verify", *s, env=env)
        verify_report = sorted(reports.glob(f"{lab}/*/report.json"))[-1]
        facts.update(counts(verify_report))
        out["drift (three layers, clean lab)"], _ = timed("drift", *s, env=env)
        out["rebuild one node (vectordb-01)"], _ = timed("rebuild", "vectordb-01", *s, env=env)
    finally:
        if not args.keep:
            timed(*down, env=env, ok=(0, 1))
    dest = write_result(
        "lab_ops", {"seconds": {k: round(v, 1) for k, v in out.items()}, "facts": facts}
    )
    width = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:<{width}}  {v:7.1f} s")
    for k, v in facts.items():
        print(f"{k}: {v}")
    print(f"written: {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
