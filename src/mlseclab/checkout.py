"""Where the checkout is: the one answer for the files mlseclab reads from its source tree.

mlseclab runs from its checkout (``pip install -e .``): the roles and their playbook, the
Ansible config, the templates, the posture suite and the Pulumi program are files of the
checkout, not package data. :func:`root` is the checkout this package was imported from
(``src/mlseclab/checkout.py`` -> two levels up); everything else is a path under it.

Two environment variables point elsewhere, for a run against another tree:

- ``MLSECLAB_TEMPLATES``: the Jinja2 templates directory (default ``<root>/templates``).
- ``MLSECLAB_PROJECT_DIR``: the Pulumi project, a directory holding ``Pulumi.yaml`` and
  ``stacks/``. Without it (or when it holds no project) the checkout is used, then the
  current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlseclab.errors import LabError, TargetError

TEMPLATES_ENV = "MLSECLAB_TEMPLATES"
PROJECT_DIR_ENV = "MLSECLAB_PROJECT_DIR"

_ROOT = Path(__file__).resolve().parents[2]


def root() -> Path:
    """The checkout this package runs from."""
    return _ROOT


def roles() -> Path:
    """``roles/``: one Ansible role per concern."""
    return _ROOT / "roles"


def site_yml() -> Path:
    """``roles/site.yml``: the hardening playbook ``harden`` runs."""
    return roles() / "site.yml"


def ansible_cfg() -> Path:
    """``ansible.cfg``: the config ``harden`` points ANSIBLE_CONFIG at."""
    return _ROOT / "ansible.cfg"


def templates() -> Path:
    """The Jinja2 templates shared by the orchestrator: $MLSECLAB_TEMPLATES or ``templates/``."""
    env = os.environ.get(TEMPLATES_ENV)
    return Path(env) if env else _ROOT / "templates"


def posture_suite() -> Path:
    """``tests/posture``: the posture checks ``verify`` runs."""
    suite = _ROOT / "tests" / "posture"
    if not (suite / "test_network.py").is_file():
        raise LabError(
            "the posture suite (tests/posture) was not found next to this mlseclab;",
            "run mlseclab from its checkout (pip install -e .)",
        )
    return suite


def _is_project(d: Path) -> bool:
    return (d / "Pulumi.yaml").is_file() and (d / "stacks" / "__main__.py").is_file()


def project_dir() -> Path:
    """The Pulumi project (Pulumi.yaml and stacks/): $MLSECLAB_PROJECT_DIR, the checkout,
    or the current directory, whichever first holds one."""
    candidates = []
    if env := os.environ.get(PROJECT_DIR_ENV):
        candidates.append(Path(env))
    candidates += [_ROOT, Path.cwd()]
    for c in candidates:
        if _is_project(c):
            return c
    raise TargetError(
        "cannot find the Pulumi program (Pulumi.yaml and stacks/); run mlseclab from its "
        f"checkout or set {PROJECT_DIR_ENV} to it"
    )
