"""The lab spec: its schema, the whole-lab rules, the error wording and loading.

``schema`` holds the pydantic models and the constants they share; ``rules`` the checks
only the whole lab can tell; ``messages`` the wording of every problem; ``load`` reads a
file and runs both passes. Everything other modules use is re-exported here.
"""

from mlseclab.spec.load import MAX_SPEC_BYTES, load_spec, parse_spec, validate_data
from mlseclab.spec.rules import check_rules, target_problems
from mlseclab.spec.schema import (
    ALL,
    ANY,
    DATASETS_ROOT,
    OPERATOR,
    OPERATOR_USER,
    Engine,
    Flow,
    LabModel,
    LabSpec,
    LocalSettings,
    Mount,
    NodeKind,
    ProxmoxSettings,
    Purpose,
    Role,
    Waiver,
    system_path_problem,
)

__all__ = [
    "ALL",
    "ANY",
    "DATASETS_ROOT",
    "MAX_SPEC_BYTES",
    "OPERATOR",
    "OPERATOR_USER",
    "Engine",
    "Flow",
    "LabModel",
    "LabSpec",
    "LocalSettings",
    "Mount",
    "NodeKind",
    "ProxmoxSettings",
    "Purpose",
    "Role",
    "Waiver",
    "check_rules",
    "load_spec",
    "parse_spec",
    "system_path_problem",
    "target_problems",
    "validate_data",
]
