"""What the real engine needs, checked before it runs; failures worded as one line.

:meth:`Preflight.check` looks at the Pulumi SDK, the ``pulumi`` CLI, the
``proxmoxve`` plugin, the API token, the endpoint and the token's privileges, in
that order, and raises :class:`TargetError` naming the first thing missing and
how to get it. :func:`explain` turns an engine failure into one actionable line;
neither ever echoes the token (:func:`redact`).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlseclab import alphabets as ab
from mlseclab import checkout
from mlseclab.errors import TargetError
from mlseclab.spec import LabSpec
from mlseclab.targets.proxmox.program import (
    ENDPOINT_ENV,
    PLUGIN,
    PLUGIN_VERSION,
    PULUMI_MIN,
    TOKEN_CONFIG,
    TOKEN_ENV,
    stacks_module,
)


def pulumi_home() -> Path:
    return Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")


def plugin_installed() -> bool:
    plugins = pulumi_home() / "plugins"
    return any(plugins.glob(f"resource-{PLUGIN}-v*"))


def stack_config_has_token(stack: str) -> bool:
    cfg = checkout.project_dir() / f"Pulumi.{stack}.yaml"
    try:
        text = cfg.read_text(encoding="utf-8")
    except OSError:
        return False
    return re.search(rf"^\s*{re.escape(TOKEN_CONFIG)}:\s*\n\s*secure:", text, re.M) is not None


@dataclass(frozen=True)
class Preflight:
    """The checks for one lab spec (``spec_path`` only names the file in messages)."""

    spec: LabSpec
    spec_path: Path

    @property
    def endpoint(self) -> str:
        """The API endpoint: ``PROXMOX_VE_ENDPOINT``, else ``lab.proxmox.endpoint``; https only.

        The spec's validator refuses anything but https; the environment gets the same
        check here, since an http:// endpoint sends the API token in cleartext.
        """
        env = os.environ.get(ENDPOINT_ENV)
        if env:
            found = ab.ENDPOINT.fullmatch(env)
            if not found or ".." in found["host"]:
                raise TargetError(
                    f"{ENDPOINT_ENV}={ab.shown(env)} is not an https API endpoint (an http:// "
                    "one would send the API token in cleartext); set it to "
                    "https://HOST:8006/, or unset it to use lab.proxmox.endpoint"
                )
            return env
        if self.spec.lab.proxmox is None:
            raise TargetError(
                f"no Proxmox endpoint: set {ENDPOINT_ENV} or lab.proxmox.endpoint "
                f"in {self.spec_path}"
            )
        return self.spec.lab.proxmox.endpoint

    def check(self) -> None:
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
        sdk = importlib.metadata.version("pulumi")
        if sdk_too_old(sdk):
            raise TargetError(
                f"the Pulumi Python SDK is {sdk}; the program needs "
                f"{'.'.join(map(str, PULUMI_MIN))} or newer (ResourceOptions replace_with); "
                "run: pip install -U 'mlseclab[proxmox]'"
            )
        if shutil.which("pulumi") is None:
            raise TargetError(
                "the pulumi CLI is not on PATH; install it "
                "(https://www.pulumi.com/docs/install/) or use "
                "`mlseclab plan --target proxmox --offline` for the offline plan"
            )
        if not plugin_installed():
            raise TargetError(
                f"the {PLUGIN} resource plugin is not in {pulumi_home() / 'plugins'}; run "
                f"`pulumi plugin install resource {PLUGIN} {PLUGIN_VERSION}` (offline sites: "
                "copy the plugin directory into PULUMI_HOME/plugins)"
            )
        checkout.project_dir()
        if not os.environ.get(TOKEN_ENV) and not stack_config_has_token(self.spec.lab.name):
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
            version = self._api(base + "/version", token)
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
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise TargetError(
                    f"{self.endpoint} presents a certificate this machine does not trust "
                    f"({reason.verify_message or reason.reason}); Proxmox's own is "
                    "self-signed: point SSL_CERT_FILE at a copy of the cluster's "
                    "/etc/pve/pve-root-ca.pem, or set lab.proxmox.insecure: true in "
                    f"{self.spec_path}"
                ) from None
            raise TargetError(
                f"{self.endpoint} does not answer ({reason}); check "
                f"lab.proxmox.endpoint or {ENDPOINT_ENV}, and the network "
                "path to port 8006"
            ) from None
        problem = version_problem(version.get("data") or {})
        if problem:
            raise TargetError(f"{self.endpoint}: {problem}")
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
            ("/access", "Sys.Modify", "create the lab's roles"),
            ("/access/realm/pve", "Realm.AllocateUser", "create the lab user in realm pve"),
            ("/access/groups", "Group.Allocate", "create the operator groups"),
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
        for priv, why in [*access.LAB_VMS, *access.LAB_STORAGE]:
            if priv.startswith("VM.") or priv.startswith("Pool."):
                out.append((f"/pool/{pool}", priv, why))
            else:
                out.append((f"/storage/{px.datastore}", priv, why))
        # Where Proxmox checks SDN.Use for each NIC: the vnet or the VLAN on the bridge.
        out += [
            (path, "SDN.Use", "attach the lab's NICs")
            for path in stacks_module("network").sdn_use_paths(self.spec)
        ]
        if px.template.vm_id is not None:
            out.append((f"/vms/{px.template.vm_id}", "VM.Clone", "clone the template"))
        if clones_migrate(self.spec, stacks_module("compute").placement(self.spec)):
            out.append(
                (
                    f"/pool/{pool}",
                    "VM.Migrate",
                    "move clones from the template's node to their own (storage not shared)",
                )
            )
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


# -- pure helpers, tested without the CLI ----------------------------------------------
#: virtiofs and directory mappings (every dataset mount) need Proxmox VE 8.4 (bpg#1892).
MIN_PVE = (8, 4)


def sdk_too_old(version: str) -> bool:
    """Whether a Pulumi SDK version string is older than :data:`PULUMI_MIN`."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return found is None or (int(found[1]), int(found[2])) < PULUMI_MIN


def version_problem(data: Mapping[str, Any]) -> str | None:
    """Why the cluster's ``/version`` answer is too old for the stack (None: new enough)."""
    text = str(data.get("version") or data.get("release") or "")
    found = re.match(r"(\d+)\.(\d+)", text)
    need = ".".join(map(str, MIN_PVE))
    if not found:
        return (
            f"cannot tell the Proxmox VE version from /version ({text or 'no version'}); "
            f"mlseclab needs {need} or newer"
        )
    if (int(found[1]), int(found[2])) < MIN_PVE:
        return (
            f"runs Proxmox VE {text}; mlseclab needs {need} or newer (virtiofs and directory "
            "mappings for the datasets); upgrade the cluster"
        )
    return None


def clones_migrate(spec: LabSpec, hosts: Mapping[str, str]) -> bool:
    """Whether some clone must move off the template's node (bpg clones on the template's
    node, then migrates when the storage is not shared): VM.Migrate is then needed.

    With ``template.vm_id`` the template is on the first of ``lab.proxmox.nodes``; with a
    tag its node is known only at run time, so any placement over two nodes or more counts.
    """
    px = spec.lab.proxmox
    if px is None:
        return False
    if px.template.vm_id is not None:
        return any(h != px.nodes[0] for h in hosts.values())
    return len(set(hosts.values())) > 1


def missing_privileges(
    granted: Mapping[str, Mapping[str, Any]], required: list[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """Required (path, privilege, why) not granted on the path or any parent of it.

    PVE's /access/permissions values are the propagate flag, not a yes/no: a key present
    on the exact path grants it (even 0), a parent grants it only when it propagates (1).
    """

    def parents(path: str) -> Iterator[str]:
        parts = path.strip("/").split("/")
        for i in range(len(parts), -1, -1):
            yield "/" + "/".join(parts[:i]) if i else "/"

    return [
        (path, priv, why)
        for path, priv, why in required
        if not any(
            priv in granted.get(p, {}) if p == path else granted.get(p, {}).get(priv)
            for p in parents(path)
        )
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
    detail = redact(
        lines[-1]
        if lines
        else message.strip().splitlines()[-1]
        if message.strip()
        else "unknown error"
    )
    return f"pulumi failed: {detail[:300]}"


def redact(text: str) -> str:
    """``text`` without the API token (whole, or its secret half) or any PVEAPIToken header."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        text = text.replace(token, "***")
        if "=" in token:
            text = text.replace(token.split("=", 1)[1], "***")
    return re.sub(r"PVEAPIToken=\S+", "PVEAPIToken=***", text)
