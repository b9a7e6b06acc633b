"""Readers of a node's live service state, shared by the service checks.

The gateway, inference, vectordb, rag and observability checks read the same
kinds of things: listening sockets, systemd unit properties, the state of a
unit's running process, file owners and modes. Each reader is one round trip
over the node's SSH connection and returns plain data; the checks compare it
with what the lab spec says and put found-versus-expected in their messages.

Secrets never travel: where a check needs to know whether a key shows up
somewhere, a script on the node reads the key and reports only where it was
found (or a sha256), never the key itself.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlseclab.posture.plugin import PostureLab, PostureNode, not_applicable
from mlseclab.secrets import SecretPaths
from mlseclab.spec import Purpose


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    processes: tuple[str, ...]  # process names from ss -p
    pids: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.address}:{self.port} ({','.join(sorted(set(self.processes))) or '?'})"


_SS_PROC = re.compile(r'\("([^"]*)",pid=(\d+)')


def listeners(host: Any, proto: str = "tcp") -> list[Listener]:
    """Every listening socket on the node (``ss -Hlnp``), with the processes that hold it."""
    flag = "-Htlnp" if proto == "tcp" else "-Hulnp"
    out = host.check_output(f"ss {flag}")
    found = []
    for line in out.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        local = parts[3]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        procs = _SS_PROC.findall(parts[5]) if len(parts) > 5 else []
        found.append(
            Listener(
                address=address,
                port=int(port),
                processes=tuple(p for p, _ in procs),
                pids=tuple(int(pid) for _, pid in procs),
            )
        )
    return found


def unit_properties(host: Any, unit: str, props: tuple[str, ...]) -> dict[str, str]:
    """``systemctl show -p ...`` of one unit as a dict (the loaded unit: files and drop-ins).

    A property systemd prints more than once (``Listen=``) has its values joined by "; ".
    """
    out = host.check_output("systemctl show %s -p %s", unit, ",".join(props))
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = f"{values[key]}; {value}" if key in values else value
    return values


@dataclass(frozen=True)
class FileState:
    path: str
    exists: bool
    mode: int = 0
    owner: str = ""
    group: str = ""
    kind: str = ""  # "regular file", "directory", "symbolic link", ...

    def __str__(self) -> str:
        if not self.exists:
            return f"{self.path}: missing"
        return f"{self.path}: {self.mode:04o} {self.owner}:{self.group}"


def file_states(host: Any, paths: list[str]) -> dict[str, FileState]:
    """Owner, group, mode and type of each path (missing paths are reported, not raised)."""
    script = (
        'for p in "$@"; do if [ -e "$p" ] || [ -L "$p" ]; then '
        'stat -c \'%a|%U|%G|%F|%n\' -- "$p"; else echo "missing|||x|$p"; fi; done'
    )
    quoted = " ".join(_quote(p) for p in paths)
    out = host.check_output(f"sh -c {_quote(script)} sh {quoted}")
    states: dict[str, FileState] = {}
    for line in out.splitlines():
        mode, owner, group, kind, path = line.split("|", 4)
        if mode == "missing":
            states[path] = FileState(path=path, exists=False)
        else:
            states[path] = FileState(
                path=path, exists=True, mode=int(mode, 8), owner=owner, group=group, kind=kind
            )
    return states


def mode_findings(
    state: FileState, *, mode: int, owner: str, group: str | None = None
) -> list[str]:
    """What is wrong with a file that must be at most ``mode`` and owned as given."""
    if not state.exists:
        return [f"{state.path} is missing"]
    wrong = []
    if state.mode & ~mode:
        wrong.append(f"{state.path} is {state.mode:04o}, expected {mode:04o} or stricter")
    if state.owner != owner or (group is not None and state.group != group):
        expected = f"{owner}:{group}" if group is not None else owner
        wrong.append(f"{state.path} is owned by {state.owner}:{state.group}, expected {expected}")
    return wrong


def run_python(host: Any, script: str, arg: Any = None) -> Any:
    """Run a Python script on the node (as root) and return the JSON it prints.

    ``arg`` reaches the script as JSON in ``sys.argv[1]``: never pass a secret.
    """
    cmd = host.run("python3 -c %s %s", script, json.dumps(arg))
    assert cmd.rc == 0, f"the probe script failed on the node (rc {cmd.rc}): {cmd.stderr[-800:]}"
    return json.loads(cmd.stdout)


# The status of a unit's main process, as the kernel sees it.
_PROCESS_STATUS = r"""
import json, os, pwd, sys
pid = int(sys.argv[1])
out = {}
if pid > 0:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
if "Uid" in out:
    uid = int(out["Uid"].split()[1])
    try:
        out["user"] = pwd.getpwuid(uid).pw_name
    except KeyError:
        out["user"] = str(uid)
print(json.dumps(out))
"""


def process_status(host: Any, pid: int) -> dict[str, str]:
    """``/proc/PID/status`` of a process (empty when it is gone), plus its effective user."""
    result: dict[str, str] = run_python(host, _PROCESS_STATUS, pid)
    return result


SANDBOX_PROPERTIES = (
    "User",
    "Group",
    "DynamicUser",
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "ReadOnlyPaths",
    "RestrictAddressFamilies",
    "NeedDaemonReload",
    "MainPID",
    "ActiveState",
    "UnitFileState",
)

# What every service unit of the lab must have (values as systemctl show prints them).
SANDBOX_EXPECTED = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_INET AF_UNIX",
    "NeedDaemonReload": "no",
}


def sandbox_findings(
    host: Any, unit: str, *, user: str, read_only: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, str]]:
    """What is missing from a unit's sandbox: its configuration and, if it runs, its process."""
    props = unit_properties(host, unit, SANDBOX_PROPERTIES)
    wrong = [
        f"{unit}: {key}={props.get(key, '?')!r}, expected {want!r}"
        for key, want in SANDBOX_EXPECTED.items()
        if props.get(key) != want
    ]
    if props.get("User") != user or props.get("DynamicUser") != "no":
        wrong.append(
            f"{unit}: User={props.get('User')!r} DynamicUser={props.get('DynamicUser')}, "
            f"expected the dedicated account {user!r}"
        )
    ro = props.get("ReadOnlyPaths", "").split()
    wrong += [f"{unit}: ReadOnlyPaths={ro} lacks {p}" for p in read_only if p not in ro]
    pid = int(props.get("MainPID") or 0)
    if pid:
        st = process_status(host, pid)
        checks = {
            "user": user,
            "NoNewPrivs": "1",
            "CapBnd": "0000000000000000",
            "CapEff": "0000000000000000",
            "CapPrm": "0000000000000000",
            "Seccomp": "2",
        }
        wrong += [
            f"{unit} main process {pid}: {k}={st.get(k, '?')}, expected {v}"
            for k, v in checks.items()
            if st and st.get(k) != v
        ]
    return wrong, props


def account_findings(host: Any, name: str) -> list[str]:
    """A service account: exists, has a system uid, no login shell and no usable password."""
    script = (
        'getent passwd "$1" || exit 3; '
        'getent shadow "$1" | cut -d: -f2 | cut -c1; '  # only the first character: ! or * is locked
        "awk '$1 == \"UID_MIN\" {print $2}' /etc/login.defs"
    )
    cmd = host.run(f"sh -c {_quote(script)} sh {_quote(name)}")
    if cmd.rc == 3:
        return [f"account {name} does not exist"]
    lines = [*cmd.stdout.splitlines(), "", "", ""]
    fields = lines[0].split(":")
    uid, shell = int(fields[2]), fields[6]
    locked, uid_min = lines[1].strip(), int(lines[2].strip() or 1000)
    wrong = []
    if not 0 < uid < uid_min:
        wrong.append(f"{name} has uid {uid}, expected a system uid (1..{uid_min - 1})")
    if shell not in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"):
        wrong.append(f"{name} has the login shell {shell}")
    if locked not in ("!", "*"):
        wrong.append(f"{name} has a usable password (shadow field not locked)")
    return wrong


def service_address(node: PostureNode, purpose: Purpose | None = None) -> str:
    """The node's service address (a role's ``mlseclab_service_ips[0]``) or its ``purpose`` one."""
    if purpose is not None:
        for iface in node.topo.interfaces:
            if iface.purpose is purpose:
                return iface.ip
    return node.topo.service[0].ip


def mgmt_addresses(lab: PostureLab) -> dict[str, str]:
    """Every node's management address, by node name."""
    return {name: n.mgmt.ip for name, n in lab.topology.nodes.items()}


def observability_node(lab: PostureLab) -> PostureNode | None:
    """The node that receives journals and scrapes metrics: the first observability node."""
    return next((n for n in lab.nodes() if n.role == "observability"), None)


def secrets(lab: PostureLab) -> SecretPaths:
    """The operator's copy of the lab's secrets (the checks read only what a client holds)."""
    return SecretPaths(lab.state / "secrets")


_OTHER_HOSTS: dict[str, Any] = {}


def other_host(lab: PostureLab, name: str) -> Any:
    """A testinfra host for another node (e.g. the log receiver), over the lab's SSH config."""
    import testinfra

    if name not in _OTHER_HOSTS:
        _OTHER_HOSTS[name] = testinfra.get_host(
            f"ssh://{name}", ssh_config=str(lab.ssh_config), sudo=True
        )
    return _OTHER_HOSTS[name]


_NOT_APPLICABLE = r"""
import glob, json
found = {}
for path in sorted(glob.glob("/etc/mlseclab/not-applicable.d/*.json")):
    with open(path) as f:
        for entry in json.load(f):
            found[str(entry["control"])] = str(entry.get("reason", ""))
print(json.dumps(found))
"""


def declared_not_applicable(host: Any) -> dict[str, str]:
    """What the roles reported as not applicable on this node: control id -> reason."""
    found: dict[str, str] = run_python(host, _NOT_APPLICABLE)
    return found


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


RAG_FILES = Path(__file__).resolve().parents[2] / "roles" / "rag" / "files"


def corpus_entries(lab: PostureLab) -> tuple[Path, Any]:
    """The RAG corpus beside the spec and its manifest entries (the operator's copy)."""
    if str(RAG_FILES) not in sys.path:
        sys.path.insert(0, str(RAG_FILES))
    import yaml
    from mlseclab_rag.manifest import parse_manifest

    corpus = lab.spec_path.parent / "corpus"
    if not (corpus / "manifest.yaml").is_file():
        not_applicable(f"no corpus beside {lab.spec_path} (corpus/manifest.yaml)")
    return corpus, parse_manifest(yaml.safe_load((corpus / "manifest.yaml").read_text()))
