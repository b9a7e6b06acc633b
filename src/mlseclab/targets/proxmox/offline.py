"""The program in-process under Pulumi mocks: no CLI, no plugin, no cluster.

:func:`capture` runs ``stacks.lab.build`` with ``preview=False`` and records
every resource registration (inputs and options). It backs both the stack tests
and :func:`plan_offline`, so "what would be built" and "what the tests see" are
the same run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlseclab.errors import TargetError
from mlseclab.spec import LabSpec
from mlseclab.targets.proxmox.program import PROJECT, stacks_module


@dataclass(frozen=True)
class PlannedResource:
    type: str  # Pulumi type token
    name: str
    parent: str | None
    summary: str


@dataclass(frozen=True)
class CapturedResource:
    """One resource registration seen under mocks: its inputs (camelCase) and options."""

    type: str
    name: str
    urn: str
    parent: str | None  # parent URN
    custom: bool
    inputs: dict[str, Any]
    protect: bool = False
    ignore_changes: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = field(default_factory=tuple)
    #: Pulumi CustomTimeouts (create, update, delete); empty strings when none were given.
    custom_timeouts: tuple[str, str, str] = ("", "", "")


MOCK_TEMPLATE_VM_ID = 9000


def _mock_id(typ: str, name: str, inputs: Mapping[str, Any]) -> str:
    if "resourceId" in inputs:  # SDN zones and vnets are addressed by their id
        return str(inputs["resourceId"])
    if typ.endswith(":VmLegacy") and "vmId" in inputs:
        return str(int(inputs["vmId"]))
    if "roleId" in inputs:
        return str(inputs["roleId"])
    if "groupId" in inputs:
        return str(inputs["groupId"])
    return f"{name}-id"


def capture(
    spec: LabSpec, settings: Any | None = None, *, stack: str | None = None
) -> list[CapturedResource]:
    """Run ``build(spec, settings)`` under Pulumi mocks (``preview=False``); every resource.

    Runs in a thread of its own with a fresh event loop and fresh Pulumi settings,
    so it can be called any number of times in one process (tests, the CLI).
    Exceptions from the program are re-raised here.
    """
    lab_mod = stacks_module("lab")
    settings_mod = stacks_module("settings")
    if settings is None:
        settings = settings_mod.StackSettings(ssh_public_key=settings_mod.TEST_SSH_KEY)
    records: dict[tuple[str, str], dict[str, Any]] = {}
    order: list[tuple[str, str]] = []
    outcome: dict[str, BaseException] = {}

    import pulumi
    from pulumi.runtime import mocks as pmocks

    template_node = spec.lab.proxmox.nodes[0] if spec.lab.proxmox else "pve"

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(
            self, args: pulumi.runtime.MockResourceArgs
        ) -> tuple[str | None, dict[Any, Any]]:
            key = (args.typ, args.name)
            records.setdefault(key, {})["inputs"] = dict(args.inputs)
            records[key]["custom"] = args.custom
            state = dict(args.inputs)
            if args.typ.endswith(":Token"):
                state["value"] = "mock-token-value"
            return _mock_id(args.typ, args.name, args.inputs), state

        def call(
            self, args: pulumi.runtime.MockCallArgs
        ) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
            if args.token.endswith(":getVmsLegacy"):
                tags = list(args.args.get("tags") or [])
                return {
                    "id": "vms",
                    "tags": tags,
                    "vms": [
                        {
                            "name": "template",
                            "nodeName": template_node,
                            "vmId": MOCK_TEMPLATE_VM_ID,
                            "tags": tags,
                            "template": True,
                        }
                    ],
                }, []
            return {}, []

    class Monitor(pmocks.MockMonitor):
        def RegisterResource(self, request: Any) -> Any:
            response: Any = super().RegisterResource(request)  # type: ignore[no-untyped-call]
            if request.type != "pulumi:pulumi:Stack":
                key = (request.type, request.name)
                rec = records.setdefault(key, {})
                rec.update(
                    urn=response.urn,
                    parent=request.parent or None,
                    protect=bool(request.protect),
                    ignore_changes=tuple(request.ignoreChanges),
                    dependencies=tuple(request.dependencies),
                    custom_timeouts=(
                        request.customTimeouts.create,
                        request.customTimeouts.update,
                        request.customTimeouts.delete,
                    ),
                )
                order.append(key)
            return response

    def worker() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            mocks = Mocks()
            pulumi.runtime.set_mocks(
                mocks,
                project=PROJECT,
                stack=stack or spec.lab.name,
                preview=False,
                monitor=Monitor(mocks),
            )
            settings_obj = pulumi.runtime.settings.SETTINGS
            settings_obj.rpc_manager.clear()
            settings_obj.outputs.clear()

            def program() -> None:
                lab_mod.build(spec, settings)

            sync_await: Callable[[Any], Any] = pmocks._sync_await  # type: ignore[attr-defined]
            sync_await(pulumi.runtime.stack.run_pulumi_func(program))
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=worker, name="mlseclab-pulumi-mocks")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    out = []
    for key in order:
        rec = records[key]
        out.append(
            CapturedResource(
                type=key[0],
                name=key[1],
                urn=rec["urn"],
                parent=rec.get("parent"),
                custom=bool(rec.get("custom", False)),
                inputs=rec.get("inputs", {}),
                protect=rec.get("protect", False),
                ignore_changes=rec.get("ignore_changes", ()),
                dependencies=rec.get("dependencies", ()),
                custom_timeouts=rec.get("custom_timeouts", ("", "", "")),
            )
        )
    return out


def tree_order(resources: list[CapturedResource]) -> list[CapturedResource]:
    """Parents before children, siblings by name: the same order on every run."""
    by_parent: dict[str | None, list[CapturedResource]] = {}
    urns = {r.urn for r in resources}
    for r in resources:
        by_parent.setdefault(r.parent if r.parent in urns else None, []).append(r)
    out: list[CapturedResource] = []

    def walk(parent: str | None) -> None:
        for r in sorted(by_parent.get(parent, []), key=lambda r: (r.custom, r.name)):
            out.append(r)
            walk(r.urn)

    walk(None)
    return out


def _urn_name(urn: str | None) -> str | None:
    return urn.rsplit("::", 1)[-1] if urn else None


def summarize(res: CapturedResource) -> str:
    """One short human line about a resource, from its inputs."""
    i = res.inputs
    kind = res.type.rsplit(":", 1)[-1]
    if not res.custom:
        return "component"
    if kind == "VmLegacy":
        nics = i.get("networkDevices") or []
        vlans = ",".join(
            str(int(n["vlanId"])) if "vlanId" in n else str(n.get("bridge")) for n in nics
        )
        parts = [
            f"vm_id {int(i.get('vmId', 0))} on {i.get('nodeName')}",
            f"{i.get('machine')}/{i.get('bios')}",
        ]
        for h in i.get("hostpcis") or []:
            parts.append(f"gpu mapping {h.get('mapping')}")
        parts.append(f"{len(nics)} NICs {'vlan ' if 'vlanId' in (nics or [{}])[0] else ''}{vlans}")
        mounts = i.get("virtiofs") or []
        if mounts:
            parts.append("virtiofs " + ",".join(str(m.get("mapping")) for m in mounts))
        return ", ".join(parts)
    if kind == "Dir":
        paths = sorted({m.get("path") for m in i.get("maps", [])})
        return f"mapping {i.get('name')} -> {', '.join(map(str, paths))}" + (
            " (protected)" if res.protect else ""
        )
    if kind == "Bridge":
        return f"{i.get('name')} on {i.get('nodeName')}, vlan-aware, vids {i.get('vids')}"
    if kind == "FirewallLegacy":
        return f"cluster firewall on, input {i.get('inputPolicy')}, output {i.get('outputPolicy')}"
    if kind == "GroupLegacy" and "rules" in i:
        return f"security group {i.get('name')}: {len(i.get('rules') or [])} rules"
    if kind == "OptionsLegacy":
        return (
            f"vm {int(i.get('vmId', 0))}: in {i.get('inputPolicy')}, "
            f"out {i.get('outputPolicy')}, ipfilter {i.get('ipfilter')}"
        )
    if kind == "RulesLegacy":
        rules = i.get("rules") or []
        outs = sum(1 for r in rules if r.get("type") == "out")
        return f"vm {int(i.get('vmId', 0))}: role group + {outs} egress rules"
    if kind == "IpsetLegacy":
        return f"vm {int(i.get('vmId', 0))} {i.get('name')}: " + ",".join(
            c.get("name", "") for c in i.get("cidrs") or []
        )
    if kind in ("Vlan", "Vnet", "Subnet"):
        return " ".join(f"{k} {i[k]}" for k in ("resourceId", "tag", "cidr", "gateway") if k in i)
    if kind == "RoleLegacy":
        return f"role {i.get('roleId')}: {', '.join(i.get('privileges') or [])}"
    if kind == "AclLegacy":
        who = "token" if i.get("tokenId") else "group"
        return f"{who} gets {i.get('roleId')} on {i.get('path')}"
    if kind == "PoolLegacy":
        return f"pool {i.get('poolId')}"
    if kind == "UserLegacy":
        return f"user {i.get('userId')} (no password)"
    if kind == "Token":
        return f"token {i.get('userId')}!{i.get('tokenName')} (privilege-separated)"
    if kind == "GroupLegacy":
        return f"group {i.get('groupId')}"
    if res.type == "pulumi:providers:proxmoxve":
        return f"provider for {i.get('endpoint')}"
    return ""


def plan_offline(spec: LabSpec, spec_path: Path) -> list[PlannedResource]:
    """Every resource the program declares, from a run under mocks (no CLI, no cluster)."""
    if spec.lab.proxmox is None:
        raise TargetError(
            f"{spec_path}: lab.proxmox is missing; add endpoint, nodes "
            "and template to plan the proxmox target"
        )
    try:
        resources = capture(spec)
    except ValueError as exc:
        raise TargetError(f"{spec_path}: {exc}") from None
    return [
        PlannedResource(type=r.type, name=r.name, parent=_urn_name(r.parent), summary=summarize(r))
        for r in tree_order(resources)
    ]
