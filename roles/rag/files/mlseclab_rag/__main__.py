"""mlseclab-rag serve | ingest | status | sign (the operator's CLI reaches it over SSH)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mlseclab_rag.config import Settings, credential


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlseclab-rag")
    parser.add_argument("--settings", default="/etc/mlseclab/rag/settings.json")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the query API (mlseclab-rag.service)")
    sub.add_parser("ingest", help="ingest the corpus (mlseclab-rag-ingest.service)")
    sub.add_parser("status", help="the units' state and the last ingest report")
    args = parser.parse_args(argv)
    settings = Settings(args.settings)
    if args.command == "serve":
        from mlseclab_rag.app import serve

        serve(settings)
        return 0
    if args.command == "ingest":
        from mlseclab_rag import ingest
        from mlseclab_rag.inference import Inference
        from mlseclab_rag.store import Store

        inf = settings["inference"]
        report = ingest.run(
            settings,
            Store(settings["vectordb"], settings["ingest_user"], credential("db-password")),
            Inference(
                inf["url"],
                credential("inference-api-key"),
                inf["embedding_model"],
                inf["completion_model"],
            ),
        )
        print(json.dumps({"audit": "rag.ingest.report", **report}, sort_keys=True))
        return 0
    report_path = Path(settings["state_dir"]) / "ingest-report.json"
    units = {}
    for unit in ("mlseclab-rag.service", "mlseclab-rag-ingest.service"):
        out = subprocess.run(
            ["systemctl", "show", "-p", "ActiveState", "-p", "Result", unit],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        units[unit] = {
            "active": props.get("ActiveState", "unknown"),
            "result": props.get("Result", ""),
        }
    status = {
        "units": units,
        "last_ingest": json.loads(report_path.read_text()) if report_path.exists() else None,
    }
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
