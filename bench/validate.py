"""Benchmark `mlseclab validate` on generated specs of 5, 50 and 200 nodes.

    .venv/bin/python -m bench.validate [--runs 7] [--nodes 5,50,200]

Each spec is the reference lab scaled by ``tests/helpers/bigspec.py`` (more
nodes of each role on /20 segments). Two timings per size, median of the runs:
``in-process`` calls ``mlseclab.cli.main(["validate", SPEC])`` in this
interpreter (the modules already imported), ``cli`` runs ``mlseclab validate
SPEC`` as a separate process, interpreter start and imports included, the way a
user runs it. Needs no root and changes nothing. Results go to
``bench/results/validate-<timestamp>.json`` and are printed as a table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.record import write_result  # noqa: E402
from helpers.bigspec import write_big_spec  # noqa: E402
from mlseclab.cli import main as cli_main  # noqa: E402


def in_process(spec: Path) -> float:
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(["validate", str(spec)])
    took = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"validate {spec} failed:\n{err.getvalue()[-2000:]}")
    return took


def as_cli(spec: Path) -> float:
    exe = Path(sys.executable).with_name("mlseclab")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(exe), "validate", str(spec)], capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - start
    if proc.returncode != 0 or ": valid — lab " not in proc.stdout:
        raise SystemExit(f"`mlseclab validate {spec}` failed:\n{proc.stderr[-2000:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--nodes", default="5,50,200", help="comma-separated spec sizes")
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",") if n.strip()]
    base = Path(tempfile.mkdtemp(prefix="mlseclab-bench-validate-"))
    os.environ.setdefault("MLSECLAB_STATE_DIR", str(base / "state"))
    results: dict[str, dict[str, float | int]] = {}
    for nodes in sizes:
        spec = write_big_spec(base, nodes)
        in_process(spec)  # warm: imports, page cache
        inproc = [in_process(spec) for _ in range(args.runs)]
        cli = [as_cli(spec) for _ in range(args.runs)]
        results[str(nodes)] = {
            "spec_bytes": spec.stat().st_size,
            "in_process_median_s": round(statistics.median(inproc), 3),
            "in_process_max_s": round(max(inproc), 3),
            "cli_median_s": round(statistics.median(cli), 3),
            "cli_max_s": round(max(cli), 3),
            "runs": args.runs,
        }
    write_result("validate", {"results": results})
    print(f"{'nodes':>5} {'spec':>8} {'in-process':>11} {'max':>8} {'cli':>8} {'max':>8}")
    for nodes, r in results.items():
        print(
            f"{nodes:>5} {r['spec_bytes'] / 1024:>6.1f}KB {r['in_process_median_s']:>10.3f}s "
            f"{r['in_process_max_s']:>7.3f}s {r['cli_median_s']:>7.3f}s {r['cli_max_s']:>7.3f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
