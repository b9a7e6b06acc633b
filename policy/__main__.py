"""Entry point for the Pulumi CLI: serves the mlseclab policy pack.

The rule functions live in ``rules.py`` and are unit-tested without the CLI
(tests/stacks/test_policy.py); this file only wraps them as policies.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from rules import POLICIES

PolicyPack(name="mlseclab", policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
