"""``mlseclab verify``: prove the lab's posture, node by node and control by control."""

from __future__ import annotations

import argparse

from mlseclab.commands.common import load_context
from mlseclab.errors import FINDINGS, OK
from mlseclab.lifecycle import check_waivers, posture_control_ids, verify_lab

__all__ = ["check_waivers", "cmd_verify", "posture_control_ids", "verify_lab"]


def cmd_verify(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    extra = ["-k", args.select] if args.select else []
    run, _ = verify_lab(ctx, args.nodes, reports=args.reports, extra=extra)
    return OK if run.passed else FINDINGS
