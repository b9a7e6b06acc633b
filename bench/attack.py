"""Benchmark `mlseclab attack` on a lab that is up: the time of each scenario, and the
detection delay of each alert that fired.

    .venv/bin/python -m bench.attack --existing inventories/reference/lab.yaml [--runs 2]

Runs every scenario ``--runs`` times (the CLI itself, as a user runs it) and records,
per scenario, its verdict and seconds, and per detection the alert and its delay (the
alert's ``startsAt`` minus the scenario's start). ``--detect-timeout`` is passed on.
Results: ``bench/results/attack-<timestamp>.json`` and a table. The lab is left as it
was (every scenario puts back what it changed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench.record import write_result  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--existing", type=Path, required=True, metavar="SPEC")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--detect-timeout", type=float, default=150.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the edge client namespace and the lab's SSH key need root")
    exe = Path(sys.executable).with_name("mlseclab")
    runs = []
    for _ in range(args.runs):
        t0 = time.monotonic()
        done = subprocess.run(
            [
                str(exe),
                "attack",
                "-f",
                str(args.existing),
                "--json",
                "--detect-timeout",
                str(args.detect_timeout),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - t0
        if done.returncode not in (0, 2):
            raise SystemExit(f"attack failed (exit {done.returncode}): {done.stderr[-2000:]}")
        report = json.loads(done.stdout)
        runs.append({"wall_seconds": round(wall, 1), "exit": done.returncode, "report": report})
    per: dict[str, list[float]] = {}
    delays: dict[str, list[float]] = {}
    for r in runs:
        for s in r["report"]["scenarios"]:
            per.setdefault(s["id"], []).append(s["seconds"])
            for d in s["detections"]:
                if d["delay_seconds"] is not None:
                    delays.setdefault(d["alert"], []).append(d["delay_seconds"])
    last = runs[-1]["report"]
    fields = {
        "spec": str(args.existing),
        "runs": args.runs,
        "wall_seconds": [r["wall_seconds"] for r in runs],
        "scenario_seconds": {k: statistics.median(v) for k, v in per.items()},
        "verdicts": {s["id"]: s["verdict"] for s in last["scenarios"]},
        "detection_delay_seconds": {k: statistics.median(v) for k, v in delays.items()},
        "alert_errors": last["alert_errors"],
    }
    dest = write_result("attack", fields)
    print(f"{'scenario':26} {'seconds':>8}  verdict")
    for sid, secs in fields["scenario_seconds"].items():
        print(f"{sid:26} {secs:8.1f}  {fields['verdicts'][sid]}")
    for alert, secs in fields["detection_delay_seconds"].items():
        print(f"detected by {alert}: {secs:.0f} s after the scenario began (median)")
    for e in fields["alert_errors"]:
        print(f"note: {e}")
    print(f"wall: {fields['wall_seconds']} s; results in {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
