"""Shared setup for the Proxmox stack tests.

The repository root goes on ``sys.path`` so that ``import stacks`` and
``import policy.rules`` work as they do for the Pulumi CLI. Programs run through
``mlseclab.targets.proxmox.offline.capture``, which sets the Pulumi mocks
(``preview=False``) in a fresh thread, event loop and settings before it imports
and runs ``stacks.lab.build``: each call is independent of the previous one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack_variants import REFERENCE  # noqa: E402

from mlseclab.spec import LabSpec, load_spec  # noqa: E402
from mlseclab.targets.proxmox.offline import CapturedResource, capture  # noqa: E402


@pytest.fixture(scope="session")
def reference_spec() -> LabSpec:
    return load_spec(REFERENCE)


@pytest.fixture(scope="session")
def reference_resources(reference_spec: LabSpec) -> list[CapturedResource]:
    return capture(reference_spec)
