"""The real engine: the ``pulumi`` CLI, the ``proxmoxve`` plugin and a cluster that answers.

:class:`PulumiEngine` runs preview, up, destroy and drift on the stack named
after the lab, through the Automation API, after :class:`Preflight` found
everything it needs; engine failures become one line (:func:`explain`).

State lives in a file backend under ``<state_dir>/pulumi`` unless
``PULUMI_BACKEND_URL`` says otherwise. The stack passphrase comes from
``PULUMI_CONFIG_PASSPHRASE(_FILE)`` or from ``<state_dir>/pulumi-passphrase``
(0600, created on first use). The Proxmox token comes from ``PROXMOX_VE_API_TOKEN``
or from the stack's secret config ``mlseclab:proxmoxToken``. Neither secret is
ever printed, logged or put on a command line: the CLI gets them through its
environment or a file.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlseclab import checkout
from mlseclab.errors import TargetError
from mlseclab.spec import LabSpec
from mlseclab.targets.proxmox.preflight import Preflight, explain, redact
from mlseclab.targets.proxmox.program import ENDPOINT_ENV, stacks_module


@dataclass(frozen=True)
class PlanResult:
    changes: dict[str, int]  # op ("create", "update", "same", ...) -> count
    steps: tuple[str, ...]  # "create proxmoxve:index/vmLegacy:VmLegacy reference-rag-01-vm"


@dataclass(frozen=True)
class NodeOutput:
    name: str
    mgmt_ip: str
    vm_id: int


@dataclass(frozen=True)
class DriftItem:
    resource: str
    type: str
    diff: str


class PulumiEngine:
    """The lab's stack on a Proxmox VE 8.4+ cluster, through the Pulumi program in ``stacks/``."""

    def __init__(self, spec: LabSpec, spec_path: Path, state_dir: Path) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.state_dir = state_dir  # .mlseclab/<lab>

    def preflight(self) -> None:
        """Raise :class:`TargetError` naming the first thing the engine needs that is missing."""
        Preflight(self.spec, self.spec_path).check()

    def backend_url(self) -> str:
        env = os.environ.get("PULUMI_BACKEND_URL")
        if env:
            return env
        path = (self.state_dir / "pulumi").resolve()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path.as_uri()

    def passphrase_env(self) -> dict[str, str]:
        """How the CLI gets the passphrase: the caller's environment, else a 0600 file."""
        if os.environ.get("PULUMI_CONFIG_PASSPHRASE") or os.environ.get(
            "PULUMI_CONFIG_PASSPHRASE_FILE"
        ):
            return {}
        path = self.state_dir / "pulumi-passphrase"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise TargetError(
                f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
            )
        return {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path.resolve())}

    def _stack(self) -> Any:
        self.preflight()
        from pulumi import automation as auto

        env = {"PULUMI_BACKEND_URL": self.backend_url(), **self.passphrase_env()}
        if ENDPOINT_ENV in os.environ:
            env[ENDPOINT_ENV] = os.environ[ENDPOINT_ENV]
        try:
            stack = auto.create_or_select_stack(
                stack_name=self.spec.lab.name,
                work_dir=str(checkout.project_dir()),
                opts=auto.LocalWorkspaceOptions(env_vars=env),
            )
            stack.set_config("mlseclab:spec", auto.ConfigValue(str(self.spec_path.resolve())))
            key = self.state_dir / "ssh" / "id_ed25519.pub"
            if key.is_file():
                stack.set_config(
                    "mlseclab:sshPublicKey",
                    auto.ConfigValue(key.read_text(encoding="utf-8").strip()),
                )
            if ENDPOINT_ENV in os.environ:
                stack.set_config("mlseclab:endpoint", auto.ConfigValue(os.environ[ENDPOINT_ENV]))
        except auto.errors.CommandError as exc:
            raise TargetError(explain(str(exc))) from None
        return stack

    def _policy_packs(self) -> list[str]:
        return [str(checkout.project_dir() / "policy")]

    def plan(self) -> PlanResult:
        """``pulumi preview`` against the cluster, with the policy pack."""
        stack = self._stack()
        steps: list[str] = []
        from pulumi import automation as auto

        try:
            result = stack.preview(
                on_event=_collect_steps(steps), diff=True, policy_packs=self._policy_packs()
            )
        except auto.errors.CommandError as exc:
            raise TargetError(explain(str(exc))) from None
        changes = {str(k): int(v) for k, v in (result.change_summary or {}).items()}
        return PlanResult(changes=changes, steps=tuple(steps))

    def up(self, on_event: Callable[[str], None] | None = None) -> dict[str, NodeOutput]:
        """``pulumi up``; the nodes' management addresses and VM ids."""
        stack = self._stack()
        from pulumi import automation as auto

        px = self.spec.lab.proxmox
        try:
            result = stack.up(
                on_event=_progress(on_event),
                policy_packs=self._policy_packs(),
                parallel=max(4, 2 * (px.clone_parallelism if px else 2)),
            )
        except auto.errors.CommandError as exc:
            raise TargetError(explain(str(exc))) from None
        return node_outputs({k: v.value for k, v in result.outputs.items() if not v.secret})

    def down(self) -> None:
        """``pulumi destroy``, keeping protected resources (mappings of protected datasets)."""
        stack = self._stack()
        from pulumi import automation as auto

        try:
            stack.destroy(exclude_protected=True)
        except auto.errors.CommandError as exc:
            raise TargetError(explain(str(exc))) from None

    def drift(self) -> list[DriftItem]:
        """What changed on the cluster since the last ``up`` (refresh preview), per resource,
        then what ``up`` would change to match the spec again. The program's
        ignored_changes() are not seen."""
        stack = self._stack()
        from pulumi import automation as auto

        items: list[DriftItem] = []
        try:
            stack.preview_refresh(on_event=_collect_drift(items, "cluster"))
            stack.preview(refresh=True, diff=True, on_event=_collect_drift(items, "spec"))
        except auto.errors.CommandError as exc:
            raise TargetError(explain(str(exc))) from None
        return items


def node_outputs(outputs: Mapping[str, Any]) -> dict[str, NodeOutput]:
    """Stack outputs -> the inventory facts mlseclab needs (keys from stacks/outputs.py)."""
    keys = stacks_module("outputs")
    nodes = outputs.get(keys.NODES) or {}
    return {
        name: NodeOutput(name=name, mgmt_ip=str(v[keys.MGMT_IP]), vm_id=int(v[keys.VM_ID]))
        for name, v in sorted(nodes.items())
    }


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _collect_steps(steps: list[str]) -> Callable[[Any], None]:
    def on_event(event: Any) -> None:
        pre = getattr(event, "resource_pre_event", None)
        if pre is not None and str(pre.metadata.op.value) != "same":
            md = pre.metadata
            steps.append(f"{md.op.value} {md.type} {_name(md.urn)}")

    return on_event


def _progress(callback: Callable[[str], None] | None) -> Callable[[Any], None]:
    def on_event(event: Any) -> None:
        if callback is None:
            return
        pre = getattr(event, "resource_pre_event", None)
        if pre is not None and str(pre.metadata.op.value) != "same":
            md = pre.metadata
            callback(f"{md.op.value} {md.type.rsplit(':', 1)[-1]} {_name(md.urn)}")
        failed = getattr(event, "res_op_failed_event", None)
        if failed is not None:
            callback(f"failed {_name(failed.metadata.urn)}")
        diag = getattr(event, "diagnostic_event", None)
        if diag is not None and diag.severity == "error":
            callback(redact(diag.message.strip().splitlines()[0] if diag.message else "error"))

    return on_event


def _collect_drift(items: list[DriftItem], layer: str) -> Callable[[Any], None]:
    def on_event(event: Any) -> None:
        pre = getattr(event, "resource_pre_event", None)
        if pre is None:
            return
        md = pre.metadata
        op = str(md.op.value)
        if op in ("same", "read") or md.type == "pulumi:pulumi:Stack":
            return
        if op == "refresh" and not md.diffs and not md.detailed_diff:
            return
        if md.detailed_diff:
            detail = ", ".join(
                f"{path} ({d.diff_kind.value})" for path, d in sorted(md.detailed_diff.items())
            )
        else:
            detail = ", ".join(md.diffs or []) or op
        items.append(
            DriftItem(resource=_name(md.urn), type=md.type, diff=f"{layer}: {op}: {detail}")
        )

    return on_event


def ignored_changes() -> list[Any]:
    """The program's ``ignore_changes`` table (``stacks/ignored.py``): drift cannot see these."""
    table: list[Any] = stacks_module("ignored").IGNORED_CHANGES
    return table
