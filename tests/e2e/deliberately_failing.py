"""Not collected on its own: test_local_lab runs it to prove a failing test cleans up.

It stands a one-node lab up through the same fixture the suite uses, then fails.
"""

from __future__ import annotations

import os
from pathlib import Path

from helpers.labs import running_lab


def test_fails_with_a_lab_up() -> None:
    spec = Path(os.environ["MLSECLAB_FAILING_SPEC"])
    with running_lab(spec, Path(os.environ["MLSECLAB_STATE_DIR"])):
        raise AssertionError("failing on purpose with the lab up")
