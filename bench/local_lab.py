"""Benchmark the local target: first up (image cached), second up, down; optionally the image.

    .venv/bin/python -m bench.local_lab [--runs 3] [--image]

Runs the reference lab renamed ``bench`` on 10.88.0.0/16 with its own state and
data directories, so it never touches a lab you have up. Each run times the
real CLI as a separate process, the way a user runs it. Results go to
``bench/results/local_lab-<timestamp>.json`` and are printed as a table.
"""

from __future__ import annotations

import argparse
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
from helpers.labs import derived_lab_text, leftovers, write_lab  # noqa: E402
from mlseclab.targets.local.names import LocalNames  # noqa: E402


def timed(*args: str, env: dict[str, str]) -> float:
    exe = Path(sys.executable).with_name("mlseclab")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(exe), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`mlseclab {' '.join(args)}` failed:\n{proc.stderr[-2000:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--image",
        action="store_true",
        help="also time a node image build into an empty cache (about 80 s)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the local target needs root")
    base = Path(tempfile.mkdtemp(prefix="mlseclab-bench-"))
    spec = write_lab(base, derived_lab_text("bench", 88, base / "data"))
    env = {**os.environ, "MLSECLAB_STATE_DIR": str(base / "state")}
    s = ["-f", str(spec)]
    results: dict[str, list[float]] = {"first up (image cached)": [], "second up": [], "down": []}
    try:
        if args.image:
            cache = base / "image-cache"
            results["image build (empty cache)"] = [
                timed("up", "--no-harden", *s, env={**env, "MLSECLAB_IMAGE_CACHE": str(cache)})
            ]
            timed("down", "--purge-data", "--yes", *s, env=env)
        timed("up", "--no-harden", *s, env=env)  # warm the shared image cache and the page cache
        timed("down", "--purge-data", "--yes", *s, env=env)
        for _ in range(args.runs):
            results["first up (image cached)"].append(timed("up", "--no-harden", *s, env=env))
            results["second up"].append(timed("up", "--no-harden", *s, env=env))
            results["down"].append(timed("down", "--purge-data", "--yes", *s, env=env))
    finally:
        subprocess.run(
            [
                str(Path(sys.executable).with_name("mlseclab")),
                "down",
                "--force",
                "--purge-data",
                "--yes",
                *s,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
        )
    left = leftovers(LocalNames("bench", base / "data"))
    summary = {
        name: {
            "median_s": round(statistics.median(v), 2),
            "min_s": round(min(v), 2),
            "max_s": round(max(v), 2),
            "runs": len(v),
        }
        for name, v in results.items()
        if v
    }
    first = summary["first up (image cached)"]["median_s"]
    second = summary["second up"]["median_s"]
    report = {
        "lab": "reference (5 nodes)",
        "results": summary,
        "second_over_first": round(second / first, 3),
        "leftovers_after_down": left,
    }
    write_result("local_lab", report)
    print(f"{'step':28} {'median':>8} {'min':>8} {'max':>8}")
    for name, r in summary.items():
        print(f"{name:28} {r['median_s']:>7.2f}s {r['min_s']:>7.2f}s {r['max_s']:>7.2f}s")
    print(f"second up / first up: {report['second_over_first']:.3f}; leftovers: {left or 'none'}")
    return 0 if not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
