"""Where a benchmark's numbers go: ``bench/results/<name>-<timestamp>.json``.

Every result carries when and on what it was measured, so numbers from two
machines (or a loaded and an idle one) are never compared unknowingly.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, fields: dict[str, Any]) -> Path:
    """Write ``fields`` with the time and the host's cpus, kernel and Python; return the file."""
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **fields,
    }
    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return dest
