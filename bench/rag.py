"""Benchmark the RAG service of a lab that is up: ingest throughput and query latency.

    .venv/bin/python -m bench.rag --existing inventories/reference/lab.yaml [--queries 12]

- ingest: the index is emptied (``DELETE FROM rag.sources`` as postgres on the vector
  database node; chunks go with their documents), then ``mlseclab rag ingest`` re-indexes
  the corpus; documents and chunks per second come from the ingest's own report
  (normalise, screen, chunk, embed through inference-01, store), so SSH is not counted;
- query: ``--queries`` questions through the gateway, alternating two clients of
  different groups, each answered in full; retrieval (embed the question, search under
  row-level security) and generation (the model's answer) are timed by the service and
  reported apart, with the client's end-to-end time; p50 and p95 of each.

Results: ``bench/results/rag-<timestamp>.json`` and a table. The lab is left up with
its index rebuilt.
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

QUESTIONS = (
    "What is prompt injection and how is it mitigated?",
    "How does row-level security filter rows in PostgreSQL?",
    "Why are embeddings sensitive?",
    "What does an inference gateway do?",
    "How should model files be pinned?",
    "What happened in incident IR-2025-03?",
    "How is the gateway signing key rotated?",
    "Which detection rules page the SecOps on-call?",
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--existing", type=Path, required=True, metavar="SPEC")
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--skip-ingest", action="store_true", help="time queries only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("reaching the lab's nodes needs root (the lab's SSH key)")
    from mlseclab.commands.common import load_context
    from mlseclab.commands.rag import query

    ctx = load_context(argparse.Namespace(spec=str(args.existing), lab=None, target=None))
    exe = Path(sys.executable).with_name("mlseclab")
    facts: dict[str, object] = {"lab": ctx.spec.lab.name}
    if not args.skip_ingest:
        vectordb = next(n for n, node in ctx.spec.nodes.items() if node.role == "vectordb")
        wipe = subprocess.run(
            [
                "ssh",
                "-F",
                str(ctx.home.ssh_config),
                vectordb,
                "sudo runuser -u postgres -- psql -XAtq -d rag -c 'DELETE FROM rag.sources'",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if wipe.returncode != 0:
            raise SystemExit(f"emptying the index failed: {wipe.stderr[-500:]}")
        start = time.perf_counter()
        proc = subprocess.run(
            [str(exe), "rag", "ingest", "--json", "-f", str(args.existing)],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"ingest failed: {proc.stderr[-2000:]}")
        report = json.loads(proc.stdout)
        seconds = float(report["seconds"])
        docs = len(report["indexed"])
        facts["ingest"] = {
            "documents indexed": docs,
            "documents quarantined": len(report["quarantined"]),
            "chunks": report["chunks_written"],
            "seconds (service)": seconds,
            "seconds (CLI, over SSH)": round(wall, 2),
            "documents per second": round(docs / seconds, 2),
            "chunks per second": round(report["chunks_written"] / seconds, 2),
        }
    clients = sorted(ctx.spec.clients, key=lambda c: len(ctx.spec.clients[c].groups))
    pair = [clients[0], clients[-1]]
    retrieval: list[float] = []
    generation: list[float] = []
    total: list[float] = []
    outcomes: dict[str, int] = {}
    for i in range(args.queries):
        client, question = pair[i % 2], QUESTIONS[i % len(QUESTIONS)]
        start = time.perf_counter()
        status, body = query(ctx, client, question)
        took = time.perf_counter() - start
        outcomes[str(status)] = outcomes.get(str(status), 0) + 1
        if status == 200:
            retrieval.append(float(body["timings"]["retrieval_ms"]))
            generation.append(float(body["timings"]["generation_ms"]))
            total.append(took * 1000)
    if not total:
        raise SystemExit(f"no query was answered: {outcomes}")
    facts["query"] = {
        "queries": args.queries,
        "clients": pair,
        "outcomes (HTTP status: count)": outcomes,
        **{
            f"{name} ms p50/p95/mean": [
                round(percentile(v, 0.5), 1),
                round(percentile(v, 0.95), 1),
                round(statistics.mean(v), 1),
            ]
            for name, v in (
                ("retrieval", retrieval),
                ("generation", generation),
                ("end to end", total),
            )
        },
    }
    dest = write_result("rag", facts)
    print(json.dumps(facts, indent=2))
    print(f"written: {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
