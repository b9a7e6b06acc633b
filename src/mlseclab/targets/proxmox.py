"""The ``proxmox`` target: drives the Pulumi program in ``stacks/`` through the Automation API.

Two ways in:

- :meth:`ProxmoxTarget.plan_offline` runs the program in-process under Pulumi
  mocks (no CLI, no cluster) and lists every resource it would create.
- :meth:`ProxmoxTarget.plan`, :meth:`up`, :meth:`down` and :meth:`drift` run the
  real engine: the ``pulumi`` CLI, the ``proxmoxve`` resource plugin and a
  cluster that answers. :meth:`preflight` checks each of these first and raises
  :class:`TargetError` naming what is missing and how to get it.

State lives in a file backend under ``<state_dir>/pulumi`` unless
``PULUMI_BACKEND_URL`` says otherwise. The stack passphrase comes from
``PULUMI_CONFIG_PASSPHRASE(_FILE)`` or from ``<state_dir>/pulumi-passphrase``
(0600, created on first use). The Proxmox token comes from ``PROXMOX_VE_API_TOKEN``
or from the stack's secret config ``mlseclab:proxmoxToken``. Neither secret is
ever printed, logged or put on a command line: the CLI gets them through its
environment or a file.

Pulumi is imported lazily, so the rest of mlseclab works without it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import secrets
import shutil
import ssl
import stat
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mlseclab.errors import TargetError
from mlseclab.spec import LabSpec

PROJECT = "mlseclab"
PLUGIN = "proxmoxve"
PLUGIN_VERSION = "8.6.0"
TOKEN_ENV = "PROXMOX_VE_API_TOKEN"  # noqa: S105 - a variable name
ENDPOINT_ENV = "PROXMOX_VE_ENDPOINT"
TOKEN_CONFIG = "mlseclab:proxmoxToken"  # noqa: S105 - a config key


def ignored_changes() -> list[Any]:
    """The program's ``ignore_changes`` table (``stacks/ignored.py``): drift cannot see these."""
    table: list[Any] = stacks_module("ignored").IGNORED_CHANGES
    return table


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedResource:
    type: str  # Pulumi type token
    name: str
    parent: str | None
    summary: str


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


# ---------------------------------------------------------------------------
# Locating the program
# ---------------------------------------------------------------------------


def project_dir() -> Path:
    """The directory holding Pulumi.yaml and stacks/: $MLSECLAB_PROJECT_DIR, the source
    checkout this package runs from, or the current directory."""
    candidates = []
    if env := os.environ.get("MLSECLAB_PROJECT_DIR"):
        candidates.append(Path(env))
    candidates += [Path(__file__).resolve().parents[3], Path.cwd()]
    for c in candidates:
        if (c / "Pulumi.yaml").is_file() and (c / "stacks" / "__main__.py").is_file():
            return c
    raise TargetError(
        "cannot find the Pulumi program (Pulumi.yaml and stacks/); run mlseclab from its "
        "checkout or set MLSECLAB_PROJECT_DIR to it"
    )


def stacks_module(name: str) -> ModuleType:
    """Import ``stacks.<name>`` from the project directory."""
    root = str(project_dir())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        return importlib.import_module(f"stacks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("pulumi", "pulumi_proxmoxve"):
            raise TargetError(
                f"the Python package {exc.name} is missing; install the Proxmox extra: "
                "pip install 'mlseclab[proxmox]'"
            ) from None
        raise


# ---------------------------------------------------------------------------
# Running the program under mocks
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# The target
# ---------------------------------------------------------------------------


class ProxmoxTarget:
    """The lab on a Proxmox VE 8/9 cluster, through the Pulumi program in ``stacks/``."""

    def __init__(self, spec: LabSpec, spec_path: Path, state_dir: Path) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.state_dir = state_dir  # .mlseclab/<lab>

    # -- offline -------------------------------------------------------------
    def plan_offline(self) -> list[PlannedResource]:
        """Every resource the program declares, from a run under mocks (no CLI, no cluster)."""
        if self.spec.lab.proxmox is None:
            raise TargetError(
                f"{self.spec_path}: lab.proxmox is missing; add endpoint, nodes "
                "and template to plan the proxmox target"
            )
        try:
            resources = capture(self.spec)
        except ValueError as exc:
            raise TargetError(f"{self.spec_path}: {exc}") from None
        return [
            PlannedResource(
                type=r.type, name=r.name, parent=_urn_name(r.parent), summary=summarize(r)
            )
            for r in tree_order(resources)
        ]

    # -- prerequisites ---------------------------------------------------------
    @property
    def endpoint(self) -> str:
        env = os.environ.get(ENDPOINT_ENV)
        if env:
            return env
        if self.spec.lab.proxmox is None:
            raise TargetError(
                f"no Proxmox endpoint: set {ENDPOINT_ENV} or lab.proxmox.endpoint "
                f"in {self.spec_path}"
            )
        return self.spec.lab.proxmox.endpoint

    def pulumi_home(self) -> Path:
        return Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")

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

    def _stack_config_has_token(self) -> bool:
        cfg = project_dir() / f"Pulumi.{self.spec.lab.name}.yaml"
        try:
            text = cfg.read_text(encoding="utf-8")
        except OSError:
            return False
        return re.search(rf"^\s*{re.escape(TOKEN_CONFIG)}:\s*\n\s*secure:", text, re.M) is not None

    def _plugin_installed(self) -> bool:
        plugins = self.pulumi_home() / "plugins"
        return any(plugins.glob(f"resource-{PLUGIN}-v*"))

    def preflight(self) -> None:
        """Raise :class:`TargetError` if anything the real engine needs is missing."""
        if self.spec.lab.proxmox is None:
            raise TargetError(
                f"{self.spec_path}: lab.proxmox is missing; add endpoint, nodes and template"
            )
        try:
            import pulumi.automation  # noqa: F401
        except ImportError:
            raise TargetError(
                "the Pulumi Python SDK is missing; install the Proxmox extra: "
                "pip install 'mlseclab[proxmox]'"
            ) from None
        if shutil.which("pulumi") is None:
            raise TargetError(
                "the pulumi CLI is not on PATH; install it "
                "(https://www.pulumi.com/docs/install/) or use "
                "`mlseclab plan --target proxmox` for the offline plan"
            )
        if not self._plugin_installed():
            raise TargetError(
                f"the {PLUGIN} resource plugin is not in {self.pulumi_home() / 'plugins'}; run "
                f"`pulumi plugin install resource {PLUGIN} {PLUGIN_VERSION}` (offline sites: "
                "copy the plugin directory into PULUMI_HOME/plugins)"
            )
        project_dir()
        if not os.environ.get(TOKEN_ENV) and not self._stack_config_has_token():
            raise TargetError(
                f"no Proxmox API token: export {TOKEN_ENV}='user@realm!name=secret' or set it "
                f"as a secret: pulumi config set --secret {TOKEN_CONFIG} (value on stdin)"
            )
        self._check_endpoint()

    def _check_endpoint(self) -> None:
        """The endpoint answers, accepts the token, and the token holds what the stack needs."""
        token = os.environ.get(TOKEN_ENV)
        base = self.endpoint.rstrip("/") + "/api2/json"
        try:
            self._api(base + "/version", token)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise TargetError(
                    f"{self.endpoint} rejected the API token in {TOKEN_ENV}; "
                    "check the token id and secret (user@realm!name=uuid)"
                ) from None
            raise TargetError(
                f"{self.endpoint} answered HTTP {exc.code} to /version; "
                "is this a Proxmox VE API endpoint?"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TargetError(
                f"{self.endpoint} does not answer ({reason}); check "
                f"lab.proxmox.endpoint or {ENDPOINT_ENV}, and the network "
                "path to port 8006"
            ) from None
        if token is None:
            return  # the token is in secret config: the engine reports missing privileges
        try:
            perms = self._api(base + "/access/permissions", token)
        except (urllib.error.URLError, OSError):
            return
        missing = missing_privileges(perms.get("data") or {}, self.required_privileges())
        if missing:
            path, priv, why = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise TargetError(
                f"the API token lacks {priv} on {path}, needed to {why}{more}; "
                "grant it with an ACL (see docs/proxmox.md)"
            )

    def _api(self, url: str, token: str | None) -> dict[str, Any]:
        px = self.spec.lab.proxmox
        ctx = ssl.create_default_context()
        if px is not None and px.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(url)  # noqa: S310 - https endpoint validated by the spec
        if token:
            req.add_header("Authorization", f"PVEAPIToken={token}")
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:  # noqa: S310
            data: dict[str, Any] = json.load(resp)
            return data

    def required_privileges(self) -> list[tuple[str, str, str]]:
        """(path, privilege, why) the identity that runs the stack needs."""
        px = self.spec.lab.proxmox
        assert px is not None
        access = stacks_module("access")
        pool = px.pool or f"mlseclab-{self.spec.lab.name}"
        out: list[tuple[str, str, str]] = [
            ("/", "Sys.Audit", "read cluster and node status"),
            ("/", "Sys.Modify", "set the cluster firewall options and security groups"),
            ("/", "Permissions.Modify", "grant the lab token and operator groups their ACLs"),
            ("/access", "User.Modify", "create the lab user, token and operator groups"),
            (f"/pool/{pool}", "Pool.Allocate", "create the lab pool and put VMs in it"),
        ]
        if px.network_mode == "sdn":
            out.append(("/sdn", "SDN.Allocate", "create the lab's SDN zone, vnets and subnets"))
        else:
            out += [
                (f"/nodes/{n}", "Sys.Modify", f"create the lab bridge on {n}") for n in px.nodes
            ]
        if any(n.mounts for n in self.spec.nodes.values()):
            out.append(("/mapping/dir", "Mapping.Modify", "create the dataset mappings"))
        table = [*access.LAB_VMS, *access.LAB_STORAGE, *access.LAB_NETWORK]
        for priv, why in table:
            if priv.startswith("VM.") or priv.startswith("Pool."):
                out.append((f"/pool/{pool}", priv, why))
            elif priv.startswith("Datastore."):
                out.append((f"/storage/{px.datastore}", priv, why))
            else:
                out.append(("/sdn/zones", priv, why))
        if px.template.vm_id is not None:
            out.append((f"/vms/{px.template.vm_id}", "VM.Clone", "clone the template"))
        for n in self.spec.nodes.values():
            if n.gpu is not None:
                out.append(
                    (
                        f"/mapping/pci/{n.gpu.mapping}",
                        "Mapping.Use",
                        f"pass GPU mapping {n.gpu.mapping} through",
                    )
                )
        return out

    # -- the engine --------------------------------------------------------------
    def _stack(self) -> Any:
        self.preflight()
        from pulumi import automation as auto

        env = {"PULUMI_BACKEND_URL": self.backend_url(), **self.passphrase_env()}
        if ENDPOINT_ENV in os.environ:
            env[ENDPOINT_ENV] = os.environ[ENDPOINT_ENV]
        try:
            stack = auto.create_or_select_stack(
                stack_name=self.spec.lab.name,
                work_dir=str(project_dir()),
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
        return [str(project_dir() / "policy")]

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


# ---------------------------------------------------------------------------
# Helpers (pure, tested without the CLI)
# ---------------------------------------------------------------------------


def missing_privileges(
    granted: Mapping[str, Mapping[str, Any]], required: list[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """Required (path, privilege, why) not granted on the path or any parent of it."""

    def parents(path: str) -> Iterator[str]:
        parts = path.strip("/").split("/")
        for i in range(len(parts), -1, -1):
            yield "/" + "/".join(parts[:i]) if i else "/"

    return [
        (path, priv, why)
        for path, priv, why in required
        if not any(granted.get(p, {}).get(priv) for p in parents(path))
    ]


_PERMISSION = re.compile(r"Permission check failed \(([^,]+), ([A-Za-z.]+)\)")


def explain(message: str) -> str:
    """One actionable line from a Pulumi/Proxmox failure; never echoes secrets."""
    if m := _PERMISSION.search(message):
        return (
            f"the API token lacks {m.group(2)} on {m.group(1)}; grant it with an ACL "
            "(see docs/proxmox.md)"
        )
    if "no resource plugin" in message or "could not find plugin" in message.lower():
        return (
            f"the {PLUGIN} resource plugin is missing; run `pulumi plugin install resource "
            f"{PLUGIN} {PLUGIN_VERSION}`"
        )
    if "incorrect passphrase" in message or "passphrase must be set" in message:
        return (
            "the stack passphrase is wrong or missing; set PULUMI_CONFIG_PASSPHRASE_FILE "
            "to the file it was created with"
        )
    if "connection refused" in message or "no such host" in message or "i/o timeout" in message:
        return "the Proxmox endpoint does not answer; check lab.proxmox.endpoint and port 8006"
    if "401" in message and "authentication" in message.lower():
        return f"the Proxmox API rejected the token; check {TOKEN_ENV}"
    lines = [ln.strip() for ln in message.splitlines() if "error:" in ln]
    detail = _redact(
        lines[-1]
        if lines
        else message.strip().splitlines()[-1]
        if message.strip()
        else "unknown error"
    )
    return f"pulumi failed: {detail[:300]}"


def _redact(text: str) -> str:
    token = os.environ.get(TOKEN_ENV)
    if token:
        text = text.replace(token, "***")
        if "=" in token:
            text = text.replace(token.split("=", 1)[1], "***")
    return re.sub(r"PVEAPIToken=\S+", "PVEAPIToken=***", text)


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
            callback(_redact(diag.message.strip().splitlines()[0] if diag.message else "error"))

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
