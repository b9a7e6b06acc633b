"""The OS baseline of every node: sysctls, core dumps, modules, mounts, audit, AIDE,
journald, time, upgrades, AppArmor and packages (roles/base, MLSL-OS-*).

Each check reads the live state and, where the setting is persisted, the files
that bring it back at boot (``systemd-analyze cat-config`` gives the merged
view systemd itself uses: the last assignment wins). Controls a container
cannot have are N/A on container nodes, with the reason the role reported;
on a VM the same check tests the real thing.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest

from mlseclab.posture.plugin import PostureLab, PostureNode, not_applicable
from posture.nodeinfo import (
    cis,
    container_na,
    effective_sysctl_d,
    gather,
    last_assignments,
    ok,
    parse_stats,
    reported_na,
    stat_command,
    too_open,
)

# -- sysctl ---------------------------------------------------------------------

# CIS Debian 13 3.3.1.x / 3.3.2.x in order; none of the nodes routes.
NET_SYSCTLS = {
    "net.ipv4.ip_forward": "0",
    "net.ipv4.conf.all.forwarding": "0",
    "net.ipv4.conf.default.forwarding": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.icmp_ignore_bogus_error_responses": "1",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.secure_redirects": "0",
    "net.ipv4.conf.default.secure_redirects": "0",
    "net.ipv4.conf.all.rp_filter": "1",
    "net.ipv4.conf.default.rp_filter": "1",
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.default.accept_source_route": "0",
    "net.ipv4.conf.all.log_martians": "1",
    "net.ipv4.conf.default.log_martians": "1",
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv6.conf.all.forwarding": "0",
    "net.ipv6.conf.default.forwarding": "0",
    "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.default.accept_redirects": "0",
    "net.ipv6.conf.all.accept_source_route": "0",
    "net.ipv6.conf.default.accept_source_route": "0",
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
}

# Host-wide: the values a VM must have (kernel.yama.ptrace_scope may be stricter).
KERNEL_SYSCTLS = {
    "fs.protected_hardlinks": {"1"},
    "fs.protected_symlinks": {"1"},
    "fs.protected_fifos": {"1", "2"},
    "fs.protected_regular": {"2"},
    "fs.suid_dumpable": {"0"},
    "kernel.yama.ptrace_scope": {"1", "2", "3"},
    "kernel.dmesg_restrict": {"1"},
    "kernel.kptr_restrict": {"2"},
    "kernel.randomize_va_space": {"2"},
    "kernel.kexec_load_disabled": {"1"},
    "kernel.sysrq": {"0"},
    "kernel.unprivileged_bpf_disabled": {"1"},
}


def _live_sysctls(keys: list[str]) -> str:
    """``key = value`` lines (a key the kernel lacks is left out)."""
    return f"sysctl {' '.join(keys)} 2>/dev/null; true"


@pytest.mark.control(
    "MLSL-OS-01",
    cis=cis("3.3.1.1-18", "3.3.2.1-8"),
    devsec="sysctl-01, sysctl-02, sysctl-03, sysctl-04, sysctl-11, sysctl-13, sysctl-14, "
    "sysctl-15, sysctl-16, sysctl-17, sysctl-19, sysctl-20, sysctl-25",
)
def test_network_sysctls(node: PostureNode, host: Any) -> None:
    """Network sysctls are hardened now and at boot: no forwarding, redirects or source routes."""
    out = gather(
        host,
        live=_live_sysctls(list(NET_SYSCTLS)),
        boot="systemd-analyze cat-config sysctl.d",
    )
    live = last_assignments(out["live"].text)
    boot = effective_sysctl_d(ok(out["boot"], "systemd-analyze cat-config sysctl.d"))
    wrong = [
        f"{k} is {live.get(k)} now (expected {v})"
        for k, v in NET_SYSCTLS.items()
        if live.get(k) != v
    ]
    wrong += [
        f"{k} = {boot.get(k, 'unset')} at boot in sysctl.d (expected {v})"
        for k, v in NET_SYSCTLS.items()
        if boot.get(k) != v
    ]
    assert not wrong, f"{node.name}: {len(wrong)} network sysctls wrong: " + "; ".join(wrong)


@pytest.mark.control(
    "MLSL-OS-02", cis=cis("1.5.1-5", "1.5.8-10"), devsec="sysctl-30, sysctl-31a, sysctl-32"
)
def test_kernel_sysctls(node: PostureNode, host: Any) -> None:
    """Kernel and fs sysctls are hardened now and at boot (ASLR, ptrace, kptr, dmesg, links)."""
    container_na(node, host, "MLSL-OS-02")
    out = gather(
        host, live=_live_sysctls(list(KERNEL_SYSCTLS)), boot="systemd-analyze cat-config sysctl.d"
    )
    live = last_assignments(out["live"].text)
    boot = effective_sysctl_d(ok(out["boot"], "systemd-analyze cat-config sysctl.d"))
    wrong = [
        f"{k} is {live.get(k)} now (expected {'/'.join(sorted(v))})"
        for k, v in KERNEL_SYSCTLS.items()
        if live.get(k) not in v
    ]
    wrong += [
        f"{k} = {boot.get(k, 'unset')} at boot (expected {'/'.join(sorted(v))})"
        for k, v in KERNEL_SYSCTLS.items()
        if boot.get(k) not in v
    ]
    assert not wrong, f"{node.name}: {len(wrong)} kernel sysctls wrong: " + "; ".join(wrong)


# -- core dumps ------------------------------------------------------------------


def _limits_hard_core(text: str) -> str:
    """The hard core limit pam_limits gives an ordinary user ("*"): the last such line wins."""
    value = "unset"
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) == 4 and words[0] == "*" and words[1] in ("hard", "-") and words[2] == "core":
            value = words[3]
    return value


@pytest.mark.control("MLSL-OS-03", cis="1.5.11, 1.5.12, 1.5.13")
def test_core_dumps_disabled(node: PostureNode, host: Any) -> None:
    """No process can leave a core file: hard core limit 0, systemd-coredump stores nothing."""
    out = gather(
        host,
        limits="cat /etc/security/limits.conf; for f in $(ls /etc/security/limits.d/*.conf "
        '2>/dev/null | sort); do cat "$f"; done',
        live="runuser -u nobody -- sh -c 'ulimit -Hc'",
        coredump="systemd-analyze cat-config systemd/coredump.conf",
    )
    wrong = []
    persisted = _limits_hard_core(out["limits"].text)
    if persisted != "0":
        wrong.append(f"limits.conf/limits.d give '* hard core {persisted}' (expected 0)")
    live = out["live"].text.strip()
    if live != "0":
        wrong.append(f"a PAM session of an ordinary user gets a hard core limit of {live!r}")
    conf = last_assignments(ok(out["coredump"], "cat-config coredump.conf"))
    if conf.get("Storage") != "none":
        wrong.append(f"systemd-coredump Storage={conf.get('Storage', 'unset (external)')}")
    if conf.get("ProcessSizeMax") != "0":
        wrong.append(f"systemd-coredump ProcessSizeMax={conf.get('ProcessSizeMax', 'unset')}")
    assert not wrong, f"{node.name}: core dumps possible: " + "; ".join(wrong)


# -- kernel modules and mounts (VMs) ---------------------------------------------

DISABLED_MODULES = {
    "cramfs": "1.1.1.1",
    "freevxfs": "1.1.1.2",
    "hfs": "1.1.1.3",
    "hfsplus": "1.1.1.4",
    "jffs2": "1.1.1.5",
    "udf": "1.1.1.8",
    "firewire-core": "1.1.1.9",
    "usb-storage": "1.1.1.10",
    "atm": "3.2.1",
    "can": "3.2.2",
    "dccp": "3.2.3",
    "rds": "3.2.4",
    "sctp": "3.2.5",
    "tipc": "3.2.6",
}


@pytest.mark.control("MLSL-OS-04", cis=", ".join(DISABLED_MODULES.values()), devsec="os-10")
def test_unused_modules_not_loadable(node: PostureNode, host: Any) -> None:
    """Unused filesystem and protocol modules cannot be loaded and are not loaded."""
    container_na(node, host, "MLSL-OS-04")
    names = " ".join(DISABLED_MODULES)
    out = gather(
        host,
        dry=f"for m in {names}; do "
        'printf "%s|%s\\n" "$m" "$(modprobe -n -v "$m" 2>&1 | tr "\\n" " ")"; done',
        loaded="cut -d' ' -f1 /proc/modules",
    )
    loaded = {m.replace("_", "-") for m in out["loaded"].lines}
    wrong = []
    for line in out["dry"].lines:
        module, _, plan = line.partition("|")
        if not re.search(r"install /(usr/)?bin/(false|true)", plan):
            wrong.append(f"{module}: modprobe would load it ({plan.strip() or 'no install rule'})")
        if module.replace("_", "-") in loaded:
            wrong.append(f"{module}: loaded now")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


TEMP_MOUNTS = {"/tmp": "1.1.2.1", "/dev/shm": "1.1.2.2", "/var/tmp": "1.1.2.5"}


@pytest.mark.control(
    "MLSL-OS-05",
    cis=cis("1.1.2.1.1-4", "1.1.2.2.1-4", "1.1.2.5.1-4"),
    devsec="os-14, os-15, os-16",
)
def test_temporary_mounts_restricted(node: PostureNode, host: Any) -> None:
    """/tmp, /var/tmp and /dev/shm are own mounts with nodev, nosuid, noexec, now and in fstab."""
    container_na(node, host, "MLSL-OS-05")
    out = gather(
        host,
        live=" ; ".join(
            f"findmnt -n -o TARGET,OPTIONS --mountpoint {m} || echo '{m} NOT-MOUNTED'"
            for m in TEMP_MOUNTS
        ),
        fstab="cat /etc/fstab",
    )
    wrong = []
    live = dict(line.split(None, 1) for line in out["live"].lines if " " in line)
    fstab = {
        w[1]: w[3]
        for w in (line.split() for line in out["fstab"].lines)
        if len(w) >= 4 and not w[0].startswith("#")
    }
    for mount in TEMP_MOUNTS:
        opts = set(live.get(mount, "NOT-MOUNTED").split(","))
        missing = {"nodev", "nosuid", "noexec"} - opts
        if "NOT-MOUNTED" in opts:
            wrong.append(f"{mount} is not a separate mount")
        elif missing:
            wrong.append(f"{mount} mounted without {','.join(sorted(missing))}")
        boot = set(fstab.get(mount, "").split(","))
        if {"nodev", "nosuid", "noexec"} - boot:
            wrong.append(f"{mount} in /etc/fstab: {fstab.get(mount, 'no entry')}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- audit ----------------------------------------------------------------------------

# (CIS Debian 13 id, what, a regular expression one rule line must match)
AUDIT_RULES = [
    ("6.2.3.1", "sudoers watched", r"^-w /etc/sudoers -p wa\b"),
    ("6.2.3.1", "sudoers.d watched", r"^-w /etc/sudoers\.d/? -p wa\b"),
    ("6.2.3.2", "commands run as another user", r"-C euid!=uid.*-S execve"),
    ("6.2.3.3", "sudo log watched", r"^-w /var/log/sudo\.log -p wa\b"),
    ("6.2.3.4", "clock changes", r"-S adjtimex,settimeofday,clock_settime"),
    ("6.2.3.4", "localtime watched", r"^-w /etc/localtime -p wa\b"),
    ("6.2.3.5", "hostname changes", r"-S sethostname,setdomainname"),
    ("6.2.3.6", "/etc/issue watched", r"^-w /etc/issue -p wa\b"),
    ("6.2.3.6", "/etc/issue.net watched", r"^-w /etc/issue\.net -p wa\b"),
    ("6.2.3.7", "/etc/hosts watched", r"^-w /etc/hosts -p wa\b"),
    ("6.2.3.7", "/etc/hostname watched", r"^-w /etc/hostname -p wa\b"),
    ("6.2.3.8", "network configuration watched", r"^-w /etc/(network|systemd/network)/? -p wa\b"),
    ("6.2.3.11", "denied file access (EACCES)", r"-F exit=-EACCES"),
    ("6.2.3.11", "denied file access (EPERM)", r"-F exit=-EPERM"),
    ("6.2.3.12", "/etc/group watched", r"^-w /etc/group -p wa\b"),
    ("6.2.3.13", "/etc/passwd watched", r"^-w /etc/passwd -p wa\b"),
    ("6.2.3.14", "/etc/shadow watched", r"^-w /etc/shadow -p wa\b"),
    ("6.2.3.14", "/etc/gshadow watched", r"^-w /etc/gshadow -p wa\b"),
    ("6.2.3.15", "opasswd watched", r"^-w /etc/security/opasswd -p wa\b"),
    ("6.2.3.16", "nsswitch.conf watched", r"^-w /etc/nsswitch\.conf -p wa\b"),
    ("6.2.3.17", "pam.d watched", r"^-w /etc/pam\.d/? -p wa\b"),
    ("6.2.3.18", "chmod family", r"-S chmod,fchmod,fchmodat"),
    ("6.2.3.19", "chown family", r"-S chown,fchown,lchown,fchownat"),
    ("6.2.3.20", "xattr changes", r"-S setxattr,lsetxattr,fsetxattr,removexattr"),
    ("6.2.3.21", "mounts", r"-S mount\b"),
    ("6.2.3.22", "sessions (utmp, wtmp, btmp)", r"^-w /var/log/wtmp -p wa\b"),
    ("6.2.3.23", "logins (lastlog, faillock)", r"^-w /var/run/faillock/? -p wa\b"),
    ("6.2.3.24", "unlink", r"-S unlink,unlinkat"),
    ("6.2.3.25", "rename", r"rename,renameat"),
    ("6.2.3.26", "AppArmor policy watched", r"^-w /etc/apparmor\.d/? -p wa\b"),
    ("6.2.3.27", "chcon", r"-F path=/usr/bin/chcon -F perm=x"),
    ("6.2.3.28", "setfacl", r"-F path=/usr/bin/setfacl -F perm=x"),
    ("6.2.3.29", "chacl", r"-F path=/usr/bin/chacl -F perm=x"),
    ("6.2.3.30", "usermod", r"-F path=/usr/sbin/usermod -F perm=x"),
    ("6.2.3.31", "kmod", r"-F path=/usr/bin/kmod -F perm=x"),
    ("6.2.3.32", "init_module, finit_module", r"-S init_module,finit_module"),
    ("6.2.3.33", "delete_module", r"-S .*delete_module"),
    ("6.2.3.35", "loading continues past a bad rule", r"^-c$"),
]
AUDIT_CIS = sorted(
    {c for c, _, _ in AUDIT_RULES} | {"6.2.3.10", "6.2.3.36"},
    key=lambda s: [int(x) for x in s.split(".")],
)


@pytest.mark.control("MLSL-OS-15", cis=", ".join(AUDIT_CIS))
def test_audit_rules_cover_the_catalogue(node: PostureNode, host: Any) -> None:
    """Audit rules cover the CIS catalogue and every setuid program, and end immutable (-e 2)."""
    out = gather(
        host,
        rules="cat /etc/audit/rules.d/*.rules",
        setid="find /usr/bin /usr/sbin /usr/lib /usr/libexec -xdev -type f -perm /6000 "
        "2>/dev/null; true",
        loaded="true" if node.runs_as_container else "auditctl -l; auditctl -s",
    )
    lines = [line.strip() for line in ok(out["rules"], "reading /etc/audit/rules.d").splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    wrong = [
        f"{cid} {what}: no rule"
        for cid, what, rx in AUDIT_RULES
        if not any(re.search(rx, r) for r in rules)
    ]
    for program in out["setid"].lines:
        rx = rf"-F path={re.escape(program)} -F perm=x\b"
        if not any(re.search(rx, r) for r in rules):
            wrong.append(f"6.2.3.10 privileged program {program}: not audited")
    # augenrules emits the last -e it reads as the final line, whichever file holds it
    enable = [r for r in rules if re.match(r"^-e\s", r)]
    if not enable or enable[-1].split() != ["-e", "2"]:
        wrong.append(
            f"6.2.3.36 the rules end with {enable[-1] if enable else 'no -e'!r}, not '-e 2'"
        )
    if not node.runs_as_container:
        status = out["loaded"].text
        if not re.search(r"^enabled 2$", status, re.M):
            wrong.append("6.2.3.36 the loaded audit configuration is not immutable (auditctl -s)")
        if "-w /etc/shadow -p wa" not in status:
            wrong.append(
                "6.2.3.37 the running rules differ from the files (no /etc/shadow watch loaded)"
            )
    assert not wrong, f"{node.name}: {len(wrong)} audit rules missing: " + "; ".join(wrong)


AUDITD_CONF = {
    "max_log_file_action": {"keep_logs"},
    "disk_full_action": {"halt", "single"},
    "disk_error_action": {"halt", "single", "syslog"},
    "space_left_action": {"email", "exec", "single", "halt"},
    "admin_space_left_action": {"single", "halt"},
}


@pytest.mark.control(
    "MLSL-OS-16",
    cis=cis("6.2.1.1-4", "6.2.2.1-4", "6.2.4.1-4"),
    devsec="package-08",
)
def test_auditd_running_with_retention(node: PostureNode, host: Any) -> None:
    """auditd runs from boot with a large backlog, keeps its logs and halts when they fill."""
    container_na(node, host, "MLSL-OS-16")
    out = gather(
        host,
        pkg="dpkg-query -W -f='${db:Status-Abbrev}' auditd",
        unit="systemctl is-enabled auditd.service; systemctl is-active auditd.service",
        cmdline="cat /proc/cmdline",
        conf="cat /etc/audit/auditd.conf",
        logs=stat_command(["/var/log/audit"])
        + "; find /var/log/audit -type f -exec stat -c '%a|%U|%G|%F|%n' {} +",
    )
    wrong = []
    if not out["pkg"].text.startswith("ii"):
        wrong.append("6.2.1.1 auditd not installed")
    if out["unit"].lines != ["enabled", "active"]:
        wrong.append(f"6.2.1.2 auditd.service is {'/'.join(out['unit'].lines)}")
    cmdline = out["cmdline"].text.split()
    if "audit=1" not in cmdline:
        wrong.append("6.2.1.3 audit=1 not on the kernel command line")
    backlog = [int(w.split("=", 1)[1]) for w in cmdline if w.startswith("audit_backlog_limit=")]
    if not backlog or backlog[-1] < 8192:
        wrong.append(f"6.2.1.4 audit_backlog_limit {backlog or 'unset'} (expected >= 8192)")
    conf = {k.lower(): v.lower() for k, v in last_assignments(out["conf"].text).items()}
    if not conf.get("max_log_file", "").isdigit():
        wrong.append("6.2.2.1 max_log_file unset")
    for key, allowed in AUDITD_CONF.items():
        if conf.get(key) not in allowed:
            wrong.append(
                f"6.2.2.x {key} = {conf.get(key, 'unset')} (expected {'/'.join(sorted(allowed))})"
            )
    for st in parse_stats(out["logs"].text).values():
        limit = 0o750 if st.kind == "directory" else 0o640
        if too_open(st.mode, limit) or st.owner != "root" or st.group not in ("root", "adm"):
            wrong.append(f"6.2.4.x {st} (expected at most {limit:04o} root:root/adm)")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- AIDE -----------------------------------------------------------------------------

AUDIT_TOOLS = ["auditctl", "auditd", "ausearch", "aureport", "autrace", "augenrules"]


@pytest.mark.control("MLSL-OS-17", cis="6.3.1, 6.3.2, 6.3.3")
def test_aide_checks_integrity_daily(node: PostureNode, host: Any) -> None:
    """AIDE has a database and a daily check timer, and watches the audit tools by sha512."""
    out = gather(
        host,
        pkg="dpkg-query -W -f='${db:Status-Abbrev}' aide",
        conf="cat /etc/aide/aide.conf",
        db=stat_command(["/var/lib/aide/aide.db"]) + "; stat -c %s /var/lib/aide/aide.db",
        timer="systemctl show mlseclab-aide-check.timer -p UnitFileState -p ActiveState; "
        "systemctl show mlseclab-aide-check.service -p ExecStart",
    )
    wrong = []
    if not out["pkg"].text.startswith("ii"):
        wrong.append("6.3.1 aide is not installed")
    db = parse_stats(out["db"].text).get("/var/lib/aide/aide.db")
    size = out["db"].lines[-1] if out["db"].lines else "0"
    if db is None or not size.isdigit() or int(size) == 0:
        wrong.append("6.3.1 no AIDE database at /var/lib/aide/aide.db")
    elif too_open(db.mode, 0o600) or db.owner != "root":
        wrong.append(f"6.3.1 the database is {db} (expected 0600 root)")
    state = last_assignments(out["timer"].text)
    if state.get("UnitFileState") != "enabled" or state.get("ActiveState") != "active":
        wrong.append(
            "6.3.2 mlseclab-aide-check.timer is "
            f"{state.get('UnitFileState')}/{state.get('ActiveState')}"
        )
    if "aide" not in state.get("ExecStart", "") or "--check" not in state.get("ExecStart", ""):
        wrong.append("6.3.2 the check service does not run aide --check")
    conf = out["conf"].text
    for tool in AUDIT_TOOLS:
        line = re.search(rf"^/(usr/)?sbin/{tool}\$?\s+(\S+)", conf, re.M)
        group = line.group(2) if line else ""
        group_def = re.search(rf"^{re.escape(group)}\s*=\s*(\S+)", conf, re.M) if group else None
        if not group_def or "sha512" not in group_def.group(1):
            wrong.append(f"6.3.3 {tool} not watched with sha512")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- journald -----------------------------------------------------------------------


@pytest.mark.control("MLSL-OS-18", cis="6.1.1.1.1, 6.1.1.1.2, 6.1.1.1.3, 6.1.1.1.5, 6.1.1.1.6")
def test_journald_persistent_compressed_bounded(node: PostureNode, host: Any) -> None:
    """journald keeps a compressed, size- and age-bounded journal on disk, not world-readable."""
    out = gather(
        host,
        conf="systemd-analyze cat-config systemd/journald.conf",
        active="systemctl is-active systemd-journald.service",
        persistent='test -s "/var/log/journal/$(cat /etc/machine-id)/system.journal"',
        loose="find /var/log/journal -type f -name '*.journal*' -perm /0137 -printf '%m %p\\n'",
    )
    conf = last_assignments(ok(out["conf"], "cat-config journald.conf"))
    wrong = []
    if out["active"].text.strip() != "active":
        wrong.append(f"6.1.1.1.1 systemd-journald is {out['active'].text.strip()}")
    if conf.get("Storage") != "persistent":
        wrong.append(f"6.1.1.1.5 Storage={conf.get('Storage', 'unset (auto)')}")
    if conf.get("Compress", "yes") not in ("yes", "true", "1"):
        wrong.append(f"6.1.1.1.6 Compress={conf.get('Compress')}")
    if not conf.get("SystemMaxUse"):
        wrong.append("6.1.1.1.3 SystemMaxUse unset (no size bound)")
    if not conf.get("MaxRetentionSec"):
        wrong.append("6.1.1.1.3 MaxRetentionSec unset (no age bound)")
    if out["persistent"].rc != 0:
        wrong.append(
            "6.1.1.1.5 journald is not writing /var/log/journal/<machine-id>/system.journal"
        )
    if out["loose"].lines:
        wrong.append(
            "6.1.1.1.2 journal files more open than 0640: " + ", ".join(out["loose"].lines[:5])
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OS-18", cis="6.1.1.1.4")
def test_journald_not_forwarded_to_syslog(node: PostureNode, host: Any) -> None:
    """journald does not forward to syslog (the journal is shipped by systemd-journal-upload)."""
    text = ok(
        gather(host, conf="systemd-analyze cat-config systemd/journald.conf")["conf"],
        "cat-config journald.conf",
    )
    source, value, current = "the built-in default", "no", ""
    for line in text.splitlines():
        if line.startswith("# /"):
            current = line[2:].strip()
        elif line.strip().startswith("ForwardToSyslog="):
            source, value = current, line.split("=", 1)[1].strip()
    assert value in ("no", "false", "0"), (
        f"{node.name}: ForwardToSyslog={value}, set last by {source} "
        "(drop-ins apply in file-name order across /etc and /usr/lib)"
    )


def _receiver(lab: PostureLab) -> str:
    return (lab.topology.groups().get("observability") or [""])[0]


@pytest.mark.control(
    "MLSL-OS-19", cis="6.1.1.2.1, 6.1.1.2.2, 6.1.1.2.3, 6.1.1.2.4", atlas="AML.M0024"
)
def test_journal_shipped_to_observability(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """systemd-journal-upload ships this node's journal over TLS to the observability node."""
    receiver = _receiver(lab)
    if node.name == receiver:
        entry = reported_na(host, "MLSL-OS-19")
        assert entry is not None, (
            f"{node.name} is the receiver but the role did not report MLSL-OS-19"
        )
        not_applicable(f"MLSL-OS-19: {entry.get('reason')}")
    assert receiver, "the lab has no observability node to ship journals to"
    target = lab.topology.nodes[receiver].mgmt.ip
    ports = {
        r.port
        for r in lab.topology.ingress(receiver)
        if node.name in r.sources and target in r.destination_addresses
    }
    out = gather(
        host,
        pkg="dpkg-query -W -f='${db:Status-Abbrev}' systemd-journal-remote",
        conf="systemd-analyze cat-config systemd/journal-upload.conf",
        unit="systemctl show systemd-journal-upload.service -p UnitFileState -p ActiveState",
        remote="for u in systemd-journal-remote.socket systemd-journal-remote.service; do "
        'echo "$u $(systemctl is-enabled $u 2>/dev/null) '
        '$(systemctl is-active $u 2>/dev/null)"; done',
        key=stat_command(["/etc/mlseclab/tls/journal-upload/node.key"]),
        state="grep -h LAST_CURSOR= /var/lib/private/systemd/journal-upload/state "
        "/var/lib/systemd/journal-upload/state 2>/dev/null; true",
    )
    conf = last_assignments(ok(out["conf"], "cat-config journal-upload.conf"))
    unit = last_assignments(out["unit"].text)
    wrong = []
    if not out["pkg"].text.startswith("ii"):
        wrong.append("6.1.1.2.1 systemd-journal-remote is not installed")
    url = conf.get("URL", "")
    m = re.fullmatch(r"https://([0-9.]+):(\d+)/?", url)
    if not m or m.group(1) != target or int(m.group(2)) not in ports:
        wrong.append(
            f"6.1.1.2.2 URL={url or 'unset'} (expected https://{target}:<port>, "
            f"a port of a flow from this node: {sorted(ports) or 'none'})"
        )
    for key in ("ServerKeyFile", "ServerCertificateFile", "TrustedCertificateFile"):
        if not conf.get(key):
            wrong.append(f"6.1.1.2.2 {key} unset (no mutual TLS)")
    key_file = parse_stats(out["key"].text).get("/etc/mlseclab/tls/journal-upload/node.key")
    if key_file is None or too_open(key_file.mode, 0o600) or key_file.owner != "root":
        wrong.append(f"6.1.1.2.2 the upload key is {key_file or 'missing'} (expected 0600 root)")
    if unit.get("UnitFileState") != "enabled" or unit.get("ActiveState") != "active":
        wrong.append(
            "6.1.1.2.3 systemd-journal-upload is "
            f"{unit.get('UnitFileState')}/{unit.get('ActiveState')}"
        )
    if not out["state"].lines:
        wrong.append("6.1.1.2.3 nothing shipped yet (no LAST_CURSOR in the upload state)")
    for line in out["remote"].lines:
        remote, *state = line.split()
        if "enabled" in state or "active" in state:
            wrong.append(f"6.1.1.2.4 {remote} is {'/'.join(state)} on a node that only ships")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- time ---------------------------------------------------------------------------


@pytest.mark.control("MLSL-OS-20", cis="2.3.1.1, 2.3.2.1, 2.3.2.2")
def test_time_synchronised_from_authorised_servers(node: PostureNode, host: Any) -> None:
    """systemd-timesyncd is the only time daemon and uses the configured servers, no fallback."""
    container_na(node, host, "MLSL-OS-20")
    out = gather(
        host,
        unit="systemctl is-enabled systemd-timesyncd; systemctl is-active systemd-timesyncd",
        conf="systemd-analyze cat-config systemd/timesyncd.conf",
        others="dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' "
        "chrony ntp ntpsec openntpd 2>/dev/null; true",
    )
    conf = last_assignments(ok(out["conf"], "cat-config timesyncd.conf"))
    wrong = []
    if out["unit"].lines != ["enabled", "active"]:
        wrong.append(f"2.3.2.2 systemd-timesyncd is {'/'.join(out['unit'].lines)}")
    if not conf.get("NTP"):
        wrong.append("2.3.2.1 no NTP= servers configured")
    if conf.get("FallbackNTP", "compiled-in defaults") != "":
        wrong.append(f"2.3.2.1 FallbackNTP={conf.get('FallbackNTP', '(compiled-in servers)')}")
    others = [line.split()[0] for line in out["others"].lines if " ii" in line]
    if others:
        wrong.append(f"2.3.1.1 other time daemons installed: {', '.join(others)}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- updates ----------------------------------------------------------------------------


@pytest.mark.control("MLSL-OS-21", cis="1.2.2.1")
def test_unattended_security_upgrades(node: PostureNode, host: Any) -> None:
    """Security updates install unattended: apt's periodic jobs and timers on, -security allowed."""
    out = gather(
        host,
        pkg="dpkg-query -W -f='${db:Status-Abbrev}' unattended-upgrades",
        apt="apt-config dump",
        timers="for t in apt-daily.timer apt-daily-upgrade.timer; do "
        'echo "$t $(systemctl is-enabled $t) $(systemctl is-active $t)"; done',
    )
    apt = out["apt"].text
    wrong = []
    if not out["pkg"].text.startswith("ii"):
        wrong.append("unattended-upgrades is not installed")
    for key in ("APT::Periodic::Update-Package-Lists", "APT::Periodic::Unattended-Upgrade"):
        m = re.findall(rf'^{re.escape(key)} "([^"]*)";', apt, re.M)
        if not m or m[-1] in ("0", ""):
            wrong.append(f"{key} is {m[-1] if m else 'unset'}")
    if not re.search(r'^Unattended-Upgrade::Origins-Pattern:: ".*-security.*";', apt, re.M):
        wrong.append("no Origins-Pattern allows the -security suite")
    for line in out["timers"].lines:
        name, *state = line.split()
        if state != ["enabled", "active"]:
            wrong.append(f"{name} is {'/'.join(state)}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- AppArmor -------------------------------------------------------------------------


@pytest.mark.control("MLSL-OS-22", cis="1.3.1.1, 1.3.1.2, 1.3.1.3")
def test_apparmor_enforcing(node: PostureNode, host: Any) -> None:
    """AppArmor is enabled from boot and every loaded profile enforces."""
    container_na(node, host, "MLSL-OS-22")
    out = gather(
        host,
        pkg="dpkg-query -W -f='${db:Status-Abbrev}' apparmor",
        enabled="cat /sys/module/apparmor/parameters/enabled",
        cmdline="cat /proc/cmdline",
        status="aa-status --json",
    )
    wrong = []
    if not out["pkg"].text.startswith("ii"):
        wrong.append("1.3.1.1 apparmor is not installed")
    if out["enabled"].text.strip() != "Y":
        wrong.append("1.3.1.2 AppArmor is not enabled in the kernel")
    if "apparmor=1" not in out["cmdline"].text.split():
        wrong.append("1.3.1.2 apparmor=1 not on the kernel command line")
    try:
        profiles = json.loads(out["status"].text).get("profiles", {})
    except ValueError:
        profiles = None
        wrong.append(f"1.3.1.3 aa-status failed: {out['status'].text.strip()[:200]}")
    if profiles is not None:
        loose = sorted(p for p, mode in profiles.items() if mode != "enforce")
        if loose or not profiles:
            wrong.append(f"1.3.1.3 profiles not enforcing: {loose or 'none loaded'}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- packages and services ------------------------------------------------------------

# Packages that must not be installed, with the rule that says so.
ABSENT_PACKAGES = {
    "nis": "2.2.1",
    "ypserv": "2.1.10",
    "rsh-client": "2.2.2",
    "rsh-server": "2.2.2",
    "talk": "2.2.3",
    "inetutils-talk": "2.2.3",
    "telnet": "2.2.4",
    "inetutils-telnet": "2.2.4",
    "ldap-utils": "2.2.5",
    "ftp": "2.2.6",
    "tnftp": "2.2.6",
    "telnetd": "2.1.16",
    "inetutils-telnetd": "2.1.16",
    "tftpd-hpa": "2.1.17",
    "tftp-hpa": "2.1.17",
    "xinetd": "2.1.20",
    "openbsd-inetd": "2.1.20",
    "prelink": "1.5.6",
    "chrony": "2.3.1.1",
    "ntp": "2.3.1.1",
    "ntpsec": "2.3.1.1",
    "openntpd": "2.3.1.1",
}
# Server daemons that may be installed (the image is shared) but not in use, except by
# the role that serves with them.
SERVER_UNITS = {
    "avahi-daemon.service": ("2.1.2", ()),
    "isc-dhcp-server.service": ("2.1.3", ()),
    "named.service": ("2.1.4", ()),
    "dnsmasq.service": ("2.1.5", ()),
    "vsftpd.service": ("2.1.6", ()),
    "slapd.service": ("2.1.7", ()),
    "dovecot.service": ("2.1.8", ()),
    "nfs-server.service": ("2.1.9", ()),
    "cups.service": ("2.1.11", ()),
    "rpcbind.service": ("2.1.12", ()),
    "rsync.service": ("2.1.13", ()),
    "smbd.service": ("2.1.14", ()),
    "snmpd.service": ("2.1.15", ()),
    "squid.service": ("2.1.18", ()),
    "apache2.service": ("2.1.19", ()),
    "nginx.service": ("2.1.19", ("gateway",)),
}
PACKAGES_CIS = sorted(
    set(ABSENT_PACKAGES.values()) | {c for c, _ in SERVER_UNITS.values()},
    key=lambda s: [int(x) for x in s.split(".")],
)


@pytest.mark.control(
    "MLSL-OS-23",
    cis=", ".join(PACKAGES_CIS),
    devsec="package-01, package-02, package-03, package-05, package-06, package-09",
)
def test_insecure_packages_absent_and_servers_off(node: PostureNode, host: Any) -> None:
    """No insecure clients or servers, prelink or second time daemon; other servers are off."""
    names = " ".join(shlex.quote(p) for p in ABSENT_PACKAGES)
    units = " ".join(SERVER_UNITS)
    out = gather(
        host,
        pkgs=f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {names} 2>/dev/null; true",
        units=f"systemctl show -p Id -p UnitFileState -p ActiveState {units}",
    )
    wrong = []
    for line in out["pkgs"].lines:
        name, *status = line.split()
        if status and status[0][:1] in ("i", "h") and status[0] != "in":
            wrong.append(f"{ABSENT_PACKAGES.get(name, '?')} {name} is installed ({status[0]})")
    for block in out["units"].text.split("\n\n"):
        props = last_assignments(block)
        unit = props.get("Id", "")
        state = [props.get("UnitFileState", ""), props.get("ActiveState", "")]
        rule, roles = SERVER_UNITS.get(unit, ("?", ()))
        if ("enabled" in state or "active" in state) and node.role not in roles:
            wrong.append(f"{rule} {unit} is {'/'.join(state)} on a {node.role} node")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- package integrity, activity and process accounting ------------------------------

#: Packages whose files guard the node: their non-conffiles must match dpkg's md5sums.
INTEGRITY_PACKAGES = (
    "openssh-server",
    "sudo",
    "login",
    "passwd",
    "libpam-modules",
    "libpam-runtime",
    "nftables",
    "auditd",
    "aide",
)
#: The service package of each role, checked with them.
SERVICE_PACKAGES = {
    "gateway": "nginx",
    "vectordb": "postgresql-17",
    "observability": "prometheus",
    "inference": "libgomp1",
}
DEBSUMS_TIMEOUT = 60  # seconds; the set above hashes in a few on a node


@pytest.mark.control("MLSL-OS-25", lynis="PKGS-7370")
def test_security_package_files_unchanged(node: PostureNode, host: Any) -> None:
    """debsums finds no changed file (conffiles aside) in sshd, sudo, PAM, nftables, audit, AIDE
    and the node's service package."""
    names = [
        *INTEGRITY_PACKAGES,
        *([SERVICE_PACKAGES[node.role]] if node.role in SERVICE_PACKAGES else []),
    ]
    out = gather(
        host,
        pkg="dpkg-query -W -f='${db:Status-Abbrev}' debsums",
        sums=f"timeout {DEBSUMS_TIMEOUT} debsums -s {' '.join(names)} 2>&1",
    )
    wrong = []
    if not out["pkg"].text.startswith("ii"):
        wrong.append("debsums is not installed")
    elif out["sums"].rc == 124:
        wrong.append(f"debsums took longer than {DEBSUMS_TIMEOUT} s")
    elif out["sums"].rc != 0 or out["sums"].text.strip():
        wrong.append(f"debsums -s (exit {out['sums'].rc}): " + "; ".join(out["sums"].lines[:5]))
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


SYSSTAT_UNITS = ("sysstat.service", "sysstat-collect.timer")


@pytest.mark.control("MLSL-OS-26", lynis="ACCT-9626")
def test_sysstat_collects_activity(node: PostureNode, host: Any) -> None:
    """sysstat records system activity: ENABLED, its boot record and 10-minute timer on, today's
    data file written."""
    out = gather(
        host,
        default="cat /etc/default/sysstat",
        units="for u in " + " ".join(SYSSTAT_UNITS) + "; do "
        'echo "$u $(systemctl is-enabled $u) $(systemctl is-active $u)"; done',
        today="test -s /var/log/sysstat/sa$(date +%d) && echo present",
    )
    wrong = []
    enabled = last_assignments(out["default"].text).get("ENABLED", "").strip("\"'")
    if enabled != "true":
        wrong.append(f"/etc/default/sysstat ENABLED={enabled or 'unset'} (expected true)")
    for line in out["units"].lines:
        name, *state = line.split()
        if state != ["enabled", "active"]:
            wrong.append(f"{name} is {'/'.join(state)}")
    if out["today"].text.strip() != "present":
        wrong.append("no sysstat data file for today in /var/log/sysstat")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OS-27", lynis="ACCT-9622")
def test_process_accounting(node: PostureNode, host: Any) -> None:
    """Process accounting is on: acct.service enabled and active, and a finished process is
    recorded in /var/log/account/pacct (VMs; a container lacks CAP_SYS_PACCT)."""
    container_na(node, host, "MLSL-OS-27")
    pacct = "/var/log/account/pacct"
    out = gather(
        host,
        unit="systemctl is-enabled acct.service; systemctl is-active acct.service",
        grows=f'a=$(stat -c %s {pacct}); /bin/true; sleep 1; b=$(stat -c %s {pacct}); echo "$a $b"',
    )
    wrong = []
    if out["unit"].lines != ["enabled", "active"]:
        wrong.append(f"acct.service is {'/'.join(out['unit'].lines) or 'unknown'}")
    sizes = out["grows"].text.split()
    if len(sizes) != 2 or not all(x.isdigit() for x in sizes) or int(sizes[1]) <= int(sizes[0]):
        wrong.append(f"{pacct} did not record a finished process ({out['grows'].text.strip()})")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
