"""Run the hardening playbook (roles/site.yml) through ansible-runner.

The run reads only what ``up`` wrote: the inventory and the lab's secrets
directory. Its events are kept under ``.mlseclab/<lab>/runs/<ident>/`` so a
later ``drift`` (or a person) can read exactly what happened, task by task.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlseclab import checkout
from mlseclab.errors import LabError
from mlseclab.state import LabHome

PLAYBOOK = checkout.site_yml()

#: ``MLSECLAB_MITOGEN=0`` runs Ansible's own SSH transport instead of Mitogen.
MITOGEN_SWITCH = "MLSECLAB_MITOGEN"


def transport_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Ansible settings that choose how tasks reach the nodes.

    By default Mitogen for Ansible (PyPI ``mitogen``) runs each node's tasks in one
    persistent Python interpreter over one SSH connection, instead of a new SSH session
    and a module upload per task: re-converging the reference lab went from 246 s to
    81 s with it (README "Speed"). The strategy is Mitogen's ``linear``, so tasks keep
    Ansible's ordering; ``MLSECLAB_MITOGEN=0`` (or Mitogen not installed) falls back to
    stock ``linear`` over SSH with pipelining, which behaves the same, only slower.
    """
    env = os.environ if environ is None else environ
    if env.get(MITOGEN_SWITCH, "1").strip().lower() in ("0", "no", "false", "off"):
        return {}
    try:
        import ansible_mitogen
    except ImportError:
        return {}
    plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear"}


@dataclass
class HostSummary:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass
class TaskResult:
    host: str
    task: str
    status: str  # ok | changed | failed | unreachable | skipped
    message: str = ""
    diff: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class HardenResult:
    ident: str
    artifacts: Path
    status: str
    hosts: dict[str, HostSummary]
    results: list[TaskResult]
    seconds: float

    @property
    def failed(self) -> bool:
        return self.status != "successful" or any(
            h.failed or h.unreachable for h in self.hosts.values()
        )

    def playbook_error(self) -> str:
        """Ansible's own last words when the run failed before any host did (a syntax
        error, a missing role): the tail of the run's stdout, secrets never in it."""
        out = self.artifacts / "stdout"
        text = out.read_text(errors="replace") if out.exists() else ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        wanted = [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()]
        found = " | ".join((wanted or lines)[-3:])[:600]
        return found or f"ansible-runner ended with status {self.status!r} and no output"

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())


_EVENT_STATUS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


def _result_of(event: dict[str, Any]) -> TaskResult | None:
    kind = event.get("event", "")
    if kind not in _EVENT_STATUS:
        return None
    data = event.get("event_data", {})
    res = data.get("res", {}) or {}
    status = _EVENT_STATUS[kind]
    if status == "ok" and res.get("changed"):
        status = "changed"
    if status == "failed" and data.get("ignore_errors"):
        status = "ok"
    message = ""
    if status in ("failed", "unreachable"):
        message = str(res.get("msg") or res.get("stderr") or res.get("module_stderr") or "")
        if res.get("_ansible_no_log"):
            message = "(output hidden: the task handles a secret)"
    diff = res.get("diff") if not res.get("_ansible_no_log") else None
    diffs = diff if isinstance(diff, list) else [diff] if isinstance(diff, dict) else []
    return TaskResult(
        host=str(data.get("host", "")),
        task=str(data.get("task", "")),
        status=status,
        message=message.strip()[:2000],
        diff=diffs,
    )


#: The key in state.json under which ``up`` records the roles' extra variables (the
#: paths of what it provisioned for them, e.g. ``mlseclab_wheelhouse_dir``).
ROLE_VARS = "role_vars"


def role_vars(home: LabHome) -> dict[str, Any]:
    """The roles' extra variables as ``up`` recorded them: a pure read of the lab's state.

    Provisioning (secrets, inventory, models, wheelhouse) is ``up``'s; harden and drift
    only read what it recorded, so ``harden --check`` and ``drift`` write nothing but
    their run artifacts.
    """
    state = home.read_state()
    if not state:
        raise LabError(f"lab {home.lab} is not up (no {home.state_file}); run `mlseclab up` first")
    recorded = state.get(ROLE_VARS)
    if not isinstance(recorded, dict):
        raise LabError(
            f"{home.state_file} records no role variables (the lab was brought up by an older "
            "mlseclab, or its up did not finish); run `mlseclab up` first: it provisions the "
            "models and the wheelhouse and records them"
        )
    return dict(recorded)


def run_playbook(
    home: LabHome,
    *,
    check: bool = False,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    extravars: dict[str, Any] | None = None,
    on_result: Callable[[TaskResult], None] | None = None,
    playbook: Path = PLAYBOOK,
) -> HardenResult:
    try:
        import ansible_runner
    except ImportError:
        raise LabError(
            "hardening needs Ansible; install it with `pip install -e '.[ansible]'` (make up does)"
        ) from None
    if not home.inventory.exists():
        raise LabError(f"lab {home.lab} has no inventory ({home.inventory}); run `mlseclab up`")
    if not playbook.exists():
        raise LabError(f"the playbook {playbook} is missing from this checkout")
    runs = home.root / "runs"
    runs.mkdir(mode=0o700, parents=True, exist_ok=True)
    ident = time.strftime("%Y%m%d-%H%M%S") + ("-check" if check else "-apply")
    cmdline: list[str] = ["--diff"]
    if check:
        cmdline.append("--check")
    for flag, value in (("--limit", limit), ("--tags", tags), ("--skip-tags", skip_tags)):
        if value:
            cmdline += [flag, value]
    results: list[TaskResult] = []

    def handler(event: dict[str, Any]) -> bool:
        result = _result_of(event)
        if result is not None:
            results.append(result)
            if on_result is not None:
                on_result(result)
        return True  # keep the event on disk

    bindir = Path(sys.executable).parent  # ansible-playbook lives beside our interpreter
    if str(bindir) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    start = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(runs),
        ident=ident,
        playbook=str(playbook),
        inventory=str(home.inventory),
        cmdline=" ".join(cmdline),
        extravars=extravars or {},
        envvars={
            "ANSIBLE_CONFIG": str(checkout.ansible_cfg()),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            **transport_env(),
        },
        event_handler=handler,
        quiet=True,
        rotate_artifacts=20,
    )
    hosts: dict[str, HostSummary] = {}
    stats = runner.stats or {}
    for key, attr in (
        ("ok", "ok"),
        ("changed", "changed"),
        ("failures", "failed"),
        ("dark", "unreachable"),
        ("skipped", "skipped"),
    ):
        for host, count in (stats.get(key) or {}).items():
            setattr(hosts.setdefault(host, HostSummary()), attr, int(count))
    # ansible counts a changed task as ok too; show them apart
    for summary in hosts.values():
        summary.ok = max(summary.ok - summary.changed, 0)
    return HardenResult(
        ident=ident,
        artifacts=runs / "artifacts" / ident,
        status=str(runner.status),
        hosts=hosts,
        results=results,
        seconds=time.monotonic() - start,
    )
