"""``mlseclab harden``: converge every node to the hardened posture."""

from __future__ import annotations

import argparse
import dataclasses
import json

from mlseclab import ui
from mlseclab.commands.common import load_context
from mlseclab.errors import ERROR, OK
from mlseclab.lifecycle import harden_lab


def cmd_harden(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    result = harden_lab(
        ctx,
        check=args.check,
        limit=args.limit,
        tags=args.tags,
        skip_tags=args.skip_tags,
        quiet=args.json,
    )
    if args.json:
        ui.out.print_json(
            json.dumps(
                {
                    "lab": ctx.spec.lab.name,
                    "check": args.check,
                    "run": result.ident,
                    "status": result.status,
                    "seconds": round(result.seconds, 1),
                    "changed": result.changed,
                    "failed": result.failed,
                    "hosts": {h: dataclasses.asdict(s) for h, s in sorted(result.hosts.items())},
                    "events": str(result.artifacts),
                }
            )
        )
    return ERROR if result.failed else OK
