"""One typed function per CLI command; each returns an exit code."""

from mlseclab.commands.attack import cmd_attack
from mlseclab.commands.data import cmd_rebuild, cmd_restore, cmd_snapshots
from mlseclab.commands.drift import cmd_drift
from mlseclab.commands.evidence import cmd_evidence
from mlseclab.commands.harden import cmd_harden
from mlseclab.commands.lab import cmd_down, cmd_ssh, cmd_status, cmd_up
from mlseclab.commands.rag import cmd_rag
from mlseclab.commands.spec import cmd_graph, cmd_plan, cmd_validate
from mlseclab.commands.verify import cmd_verify

__all__ = [
    "cmd_attack",
    "cmd_down",
    "cmd_drift",
    "cmd_evidence",
    "cmd_graph",
    "cmd_harden",
    "cmd_plan",
    "cmd_rag",
    "cmd_rebuild",
    "cmd_restore",
    "cmd_snapshots",
    "cmd_ssh",
    "cmd_status",
    "cmd_up",
    "cmd_validate",
    "cmd_verify",
]
