"""What the OS, SSH, firewall and socket checks read from a node, and how they read it.

Not a test module: small readers and parsers shared by test_os, test_accounts,
test_ssh, test_firewall and test_sockets. Every reader gathers many values in
one ``host.run`` (one SSH round trip through the lab's ControlMaster), and
nothing is cached between checks, so a check always sees the node as it is now.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from mlseclab.posture.plugin import PostureLab, PostureNode, not_applicable

NA_DIR = "/etc/mlseclab/not-applicable.d"
_MARK = "@@mlseclab-section"


def cis(*spans: str) -> str:
    """CIS ids from spans: ``cis("3.3.1.1-18", "5.1.4")`` -> "3.3.1.1, ..., 3.3.1.18, 5.1.4"."""
    out: list[str] = []
    for span in spans:
        head, _, last = span.partition("-")
        if not last:
            out.append(head)
            continue
        prefix, _, first = head.rpartition(".")
        out += [f"{prefix}.{i}" for i in range(int(first), int(last) + 1)]
    return ", ".join(out)


@dataclass(frozen=True)
class Output:
    text: str
    rc: int

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


def gather(host: Any, **commands: str) -> dict[str, Output]:
    """Run each shell command as root, all in one round trip; output and exit code by name."""
    parts = []
    for name, command in commands.items():
        parts.append(
            f"echo '{_MARK} {name}'\n{{\n{command}\n}} 2>&1\nrc=$?; echo; echo \"{_MARK}-rc $rc\""
        )
    result = host.run("\n".join(parts))
    found: dict[str, Output] = {}
    name, buf = "", list[str]()
    for line in result.stdout.splitlines():
        if line.startswith(_MARK + "-rc "):
            if buf and buf[-1] == "":
                buf.pop()  # the newline added before the marker
            found[name] = Output("\n".join(buf), int(line.split()[-1]))
            name, buf = "", []
        elif line.startswith(_MARK + " "):
            name, buf = line.split(" ", 1)[1], []
        else:
            buf.append(line)
    missing = [n for n in commands if n not in found]
    assert not missing, (
        f"no output for {missing} (exit {result.rc}): {(result.stderr or result.stdout)[-500:]}"
    )
    return found


def run(host: Any, command: str) -> str:
    """One command as root that must succeed; its output."""
    return gather(host, out=command)["out"].text


def ok(out: Output, what: str) -> str:
    assert out.rc == 0, f"{what} failed (exit {out.rc}): {out.text[-500:]}"
    return out.text


# -- files and configuration -------------------------------------------------


@dataclass(frozen=True)
class FileStat:
    path: str
    mode: int
    owner: str
    group: str
    kind: str  # stat's %F: regular file, directory, ...

    def __str__(self) -> str:
        return f"{self.path} {self.mode:04o} {self.owner}:{self.group}"


def stat_command(paths: list[str]) -> str:
    quoted = " ".join(shlex.quote(p) for p in paths)
    return f'for p in {quoted}; do [ -e "$p" ] && stat -c \'%a|%U|%G|%F|%n\' "$p"; done; true'


def parse_stats(text: str) -> dict[str, FileStat]:
    out = {}
    for line in text.splitlines():
        parts = line.split("|", 4)
        if len(parts) == 5:
            mode, owner, group, kind, path = parts
            out[path] = FileStat(path, int(mode, 8), owner, group, kind)
    return out


def too_open(mode: int, allowed: int) -> bool:
    """True when ``mode`` has a permission bit that ``allowed`` does not."""
    return bool(mode & 0o7777 & ~allowed)


def last_assignments(text: str, sep: str = "=") -> dict[str, str]:
    """key<sep>value lines, comments and [sections] skipped; the last assignment wins."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")) or sep not in line:
            continue
        key, _, value = line.partition(sep)
        out[key.strip()] = value.strip()
    return out


def effective_sysctl_d(text: str) -> dict[str, str]:
    """``systemd-analyze cat-config sysctl.d``: what systemd-sysctl applies at boot."""
    out = {}
    for key, value in last_assignments(text).items():
        out[key.lstrip("-").replace("/", ".")] = value
    return out


def words_config(text: str) -> dict[str, str]:
    """``KEY value`` files (login.defs): comments skipped, a later line overrides."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        parts = raw.strip().split(None, 1)
        if parts and not parts[0].startswith("#"):
            out[parts[0]] = parts[1].strip().strip('"') if len(parts) > 1 else ""
    return out


def pam_lines(text: str) -> list[list[str]]:
    """The non-comment lines of a PAM file, as words (control brackets kept whole)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(re.findall(r"\[[^\]]*\]|\S+", line))
    return out


def security_conf(text: str) -> dict[str, str]:
    """faillock.conf / pwquality.conf / pwhistory.conf: ``key = value`` or a bare flag."""
    out = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip() if value else "set"
    return out


# -- not applicable on a container ---------------------------------------------


def _expand(ids: str) -> set[str]:
    """ "MLSL-OS-01, MLSL-SSH-02..MLSL-SSH-09" -> each id."""
    out = set()
    for part in (p.strip() for p in ids.split(",")):
        if ".." in part:
            first, last = part.split("..", 1)
            prefix = first.rsplit("-", 1)[0]
            lo, hi = int(first.rsplit("-", 1)[1]), int(last.rsplit("-", 1)[1])
            out |= {f"{prefix}-{i:02d}" for i in range(lo, hi + 1)}
        elif part:
            out.add(part)
    return out


def na_reports(host: Any) -> list[dict[str, Any]]:
    """Every entry the roles wrote to /etc/mlseclab/not-applicable.d/*.json."""
    text = run(host, f'for f in {NA_DIR}/*.json; do [ -f "$f" ] && cat "$f"; echo; done; true')
    entries: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return entries
        doc, pos = decoder.raw_decode(text, pos)
        assert isinstance(doc, list), f"{NA_DIR}: expected a JSON list, found {type(doc).__name__}"
        entries += doc


def reported_na(host: Any, control: str) -> dict[str, Any] | None:
    for entry in na_reports(host):
        if control in _expand(str(entry.get("control", ""))):
            return entry
    return None


def container_na(node: PostureNode, host: Any, control: str) -> None:
    """On a container node end the check as N/A with the role's reason; elsewhere return.

    The role must have reported the control itself: a container node whose roles
    did not is a node the baseline was applied to as if it were a VM.
    """
    if not node.runs_as_container:
        return
    entry = reported_na(host, control)
    if entry is None:
        pytest.fail(
            f"{node.name} runs as a container, where {control} cannot hold, "
            f"but no role reported {control} in {NA_DIR}/*.json",
            pytrace=False,
        )
    not_applicable(f"{control} on a container: {entry.get('reason', 'no reason given')}")


# -- sshd ----------------------------------------------------------------------------

# Keys sshd -T prints once per value.
MULTI_SSHD_KEYS = {
    "listenaddress",
    "hostkey",
    "subsystem",
    "acceptenv",
    "setenv",
    "port",
    "allowgroups",
    "allowusers",
    "denygroups",
    "denyusers",
}


def sshd_effective(text: str) -> dict[str, Any]:
    """``sshd -T``: key -> value (a list for keys that repeat)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        if key in MULTI_SSHD_KEYS:
            out.setdefault(key, []).append(value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class SshProbe:
    """What the running sshd told the operator's ssh client in one real login."""

    returncode: int
    log: str
    kex: tuple[str, ...]
    host_key_algorithms: tuple[str, ...]
    ciphers: tuple[str, ...]
    macs: tuple[str, ...]
    compression: tuple[str, ...]
    methods: tuple[str, ...]  # "Authentications that can continue"
    host_key: str  # "ssh-ed25519 SHA256:..."


def probe_sshd(lab: PostureLab, node: PostureNode) -> SshProbe:
    """Log in from the operator's host over a fresh connection (no ControlMaster), verbosely.

    The server's KEXINIT proposal and the methods it offers come from the sshd
    that is running now, whatever its files say.
    """
    cmd = [
        "ssh",
        "-F",
        str(lab.ssh_config),
        "-vv",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        "BatchMode=yes",
        node.name,
        "true",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    log = proc.stderr
    proposal: dict[str, tuple[str, ...]] = {}
    lines = log.splitlines()
    if "debug2: peer server KEXINIT proposal" in lines:
        start = lines.index("debug2: peer server KEXINIT proposal") + 1
        for line in lines[start : start + 12]:
            m = re.match(r"debug2: (.+?): (.*)$", line)
            if m:
                proposal.setdefault(m.group(1), tuple(x for x in m.group(2).split(",") if x))
    methods: tuple[str, ...] = ()
    for line in lines:
        m = re.search(r"Authentications that can continue: (.*)$", line)
        if m:
            methods = tuple(m.group(1).split(","))
            break
    key = re.search(r"debug1: Server host key: (\S+ \S+)", log)
    return SshProbe(
        returncode=proc.returncode,
        log=log,
        kex=proposal.get("KEX algorithms", ()),
        host_key_algorithms=proposal.get("host key algorithms", ()),
        ciphers=proposal.get("ciphers stoc", ()) + proposal.get("ciphers ctos", ()),
        macs=proposal.get("MACs stoc", ()) + proposal.get("MACs ctos", ()),
        compression=proposal.get("compression stoc", ()) + proposal.get("compression ctos", ()),
        methods=methods,
        host_key=key.group(1) if key else "",
    )


def probe_ok(probe: SshProbe, node: PostureNode) -> None:
    assert probe.returncode == 0 and probe.kex, (
        f"the operator could not log in to {node.name} over SSH (exit {probe.returncode}): "
        + " | ".join(probe.log.strip().splitlines()[-3:])
    )


# -- nftables --------------------------------------------------------------------


def _values(right: Any) -> str:
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    items = right if isinstance(right, list) else [right]
    rendered = sorted(
        json.dumps(i, sort_keys=True) if isinstance(i, dict | list) else str(i) for i in items
    )
    return "{" + ",".join(rendered) + "}"


def _left(left: Any) -> str:
    if isinstance(left, dict):
        if "meta" in left:
            return f"meta {left['meta']['key']}"
        if "ct" in left:
            return f"ct {left['ct']['key']}"
        if "payload" in left and "protocol" in left["payload"]:
            return f"{left['payload']['protocol']} {left['payload']['field']}"
    return json.dumps(left, sort_keys=True)


def nft_term(expr: dict[str, Any]) -> str:
    """One nftables JSON statement in a stable, comparable text form."""
    (kind, body), *_ = expr.items()
    if kind == "match":
        op = "" if body["op"] in ("==", "in") else f"{body['op']} "
        return f"{_left(body['left'])} {op}{_values(body['right'])}"
    if kind == "counter":
        return "counter"
    if kind in ("accept", "drop", "return", "continue"):
        return kind
    if kind in ("jump", "goto"):
        return f"{kind} {body['target']}"
    return json.dumps(expr, sort_keys=True)


@dataclass(frozen=True)
class NftChain:
    table: str  # family name
    name: str
    hook: str
    policy: str
    rules: tuple[str, ...]  # nft_term forms, in order


def nft_rule_text(rule: dict[str, Any]) -> str:
    text = " ".join(nft_term(e) for e in rule.get("expr", []))
    if rule.get("comment"):
        text += f' comment "{rule["comment"]}"'
    return text


def nft_ruleset(doc_text: str) -> tuple[list[str], dict[tuple[str, str], NftChain]]:
    """``nft -j list ruleset`` -> (tables as "family name", chains by (table, chain))."""
    doc = json.loads(doc_text)
    tables: list[str] = []
    chains: dict[tuple[str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str], list[str]] = {}
    for item in doc.get("nftables", []):
        if "table" in item:
            tables.append(f"{item['table']['family']} {item['table']['name']}")
        elif "chain" in item:
            c = item["chain"]
            chains[(f"{c['family']} {c['table']}", c["name"])] = c
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault((f"{r['family']} {r['table']}", r["chain"]), []).append(
                nft_rule_text(r)
            )
    out = {
        key: NftChain(
            table=key[0],
            name=key[1],
            hook=str(c.get("hook", "")),
            policy=str(c.get("policy", "")),
            rules=tuple(rules.get(key, [])),
        )
        for key, c in chains.items()
    }
    return tables, out


def set_text(values: list[str] | tuple[str, ...]) -> str:
    return "{" + ",".join(sorted(str(v) for v in values)) + "}"
