"""Accounts, passwords, PAM, login shells and file permissions on every node
(roles/base: MLSL-OS-06..MLSL-OS-14).

PAM and the account databases are read by every login as they are on disk, so
the files are the live state; where a shell or session applies them (umask,
TMOUT), the check also starts one and reads what it got.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from mlseclab.posture.plugin import PostureNode
from mlseclab.spec import OPERATOR_USER
from posture.nodeinfo import (
    cis,
    gather,
    ok,
    pam_lines,
    parse_stats,
    security_conf,
    stat_command,
    too_open,
    words_config,
)

NOLOGIN_SHELLS = {"/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"}
SHELL_EXEMPT = {"root", "sync", "shutdown", "halt"}  # accounts whose shell is their purpose
OPERATOR = OPERATOR_USER  # the lab's automation account


def _passwd(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line.count(":") >= 6]


def _int(value: str | None, default: int = -1) -> int:
    try:
        return int(value or "")
    except ValueError:
        return default


# -- login.defs and ageing --------------------------------------------------------


@pytest.mark.control(
    "MLSL-OS-06", cis="5.4.1.1, 5.4.1.2, 5.4.1.3, 5.4.1.4, 5.4.1.5, 5.4.3.3", devsec="os-05"
)
def test_login_defs(node: PostureNode, host: Any) -> None:
    """login.defs sets umask 027, yescrypt and ageing; new accounts lock after 45 idle days."""
    out = gather(
        host,
        defs="cat /etc/login.defs",
        useradd="useradd -D",
        perms=stat_command(["/etc/login.defs"]),
    )
    defs = words_config(ok(out["defs"], "reading /etc/login.defs"))
    wrong = []
    max_days, min_days, warn = (
        _int(defs.get(k)) for k in ("PASS_MAX_DAYS", "PASS_MIN_DAYS", "PASS_WARN_AGE")
    )
    if not 0 < max_days <= 365:
        wrong.append(f"5.4.1.1 PASS_MAX_DAYS {defs.get('PASS_MAX_DAYS')} (expected 1-365)")
    if min_days < 1:
        wrong.append(f"5.4.1.2 PASS_MIN_DAYS {defs.get('PASS_MIN_DAYS')} (expected >= 1)")
    if warn < 7:
        wrong.append(f"5.4.1.3 PASS_WARN_AGE {defs.get('PASS_WARN_AGE')} (expected >= 7)")
    if defs.get("ENCRYPT_METHOD", "").upper() not in ("YESCRYPT", "SHA512"):
        wrong.append(f"5.4.1.4 ENCRYPT_METHOD {defs.get('ENCRYPT_METHOD', 'unset')}")
    umask = defs.get("UMASK", "")
    if not umask.isdigit() or int(umask, 8) & 0o027 != 0o027:
        wrong.append(f"5.4.3.3 UMASK {umask or 'unset'} (expected 027 or stricter)")
    inactive = _int(
        dict(line.split("=", 1) for line in out["useradd"].lines if "=" in line).get("INACTIVE")
    )
    if not 0 <= inactive <= 45:
        wrong.append(f"5.4.1.5 useradd INACTIVE {inactive} (expected 0-45)")
    st = parse_stats(out["perms"].text).get("/etc/login.defs")
    if st is None or too_open(st.mode, 0o644) or st.owner != "root":
        wrong.append(f"login.defs is {st} (expected 0644 root)")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


#: The floor of the hashing cost (roles/base sets yescrypt 8, SHA-crypt 100000 rounds).
YESCRYPT_COST_MIN = 7
SHA_CRYPT_ROUNDS_MIN = 5000  # glibc's default; Lynis AUTH-9230 wants it set explicitly


@pytest.mark.control("MLSL-OS-06", lynis="AUTH-9230")
def test_password_hashing_cost(node: PostureNode, host: Any) -> None:
    """Passwords are hashed at a raised cost: yescrypt factor >= 7, SHA-crypt rounds set."""
    out = gather(host, defs="cat /etc/login.defs", pam="cat /etc/pam.d/common-password")
    defs = words_config(ok(out["defs"], "reading /etc/login.defs"))
    wrong = []
    cost = _int(defs.get("YESCRYPT_COST_FACTOR"))
    if not YESCRYPT_COST_MIN <= cost <= 11:
        wrong.append(
            f"YESCRYPT_COST_FACTOR {defs.get('YESCRYPT_COST_FACTOR', 'unset')} "
            f"(expected {YESCRYPT_COST_MIN}-11)"
        )
    low, high = _int(defs.get("SHA_CRYPT_MIN_ROUNDS")), _int(defs.get("SHA_CRYPT_MAX_ROUNDS"))
    if low < SHA_CRYPT_ROUNDS_MIN or high < low:
        wrong.append(
            f"SHA_CRYPT_MIN_ROUNDS {defs.get('SHA_CRYPT_MIN_ROUNDS', 'unset')}, "
            f"SHA_CRYPT_MAX_ROUNDS {defs.get('SHA_CRYPT_MAX_ROUNDS', 'unset')} "
            f"(expected both >= {SHA_CRYPT_ROUNDS_MIN}, max >= min)"
        )
    unix = [w for w in pam_lines(out["pam"].text) if len(w) >= 3 and w[2].endswith("pam_unix.so")]
    rounds = [a for w in unix for a in w[3:] if a.startswith("rounds=")]
    if "yescrypt" in {a for w in unix for a in w[3:]} and (
        not rounds or _int(rounds[-1].split("=", 1)[1]) < YESCRYPT_COST_MIN
    ):
        wrong.append(f"pam_unix.so hashes yescrypt with {rounds or 'the default cost'}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


ISSUE = "/etc/issue"
OS_ESCAPES = ("\\m", "\\r", "\\s", "\\v")


@pytest.mark.control("MLSL-OS-28", cis="1.6.2, 1.6.5")
def test_local_login_banner(node: PostureNode, host: Any) -> None:
    """/etc/issue warns before a console login, names no OS and only root may change it."""
    out = gather(
        host,
        text=f"cat {ISSUE}",
        os="sed -n 's/^ID=//p' /etc/os-release | tr -d '\"'",
        perms=stat_command([ISSUE]),
    )
    text = out["text"].text.strip() if out["text"].rc == 0 else ""
    wrong = []
    if not text:
        wrong.append(f"1.6.2 {ISSUE} is missing or empty")
    os_id = out["os"].text.strip().lower()
    leaks = [e for e in OS_ESCAPES if e in text] + (
        [os_id] if os_id and os_id in text.lower() else []
    )
    if leaks:
        wrong.append(f"1.6.2 {ISSUE} reveals the system: {leaks}")
    st = parse_stats(out["perms"].text).get(ISSUE)
    if st is not None and (too_open(st.mode, 0o644) or st.owner != "root" or st.group != "root"):
        wrong.append(f"1.6.5 {st} (expected at most 0644 root:root)")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OS-06", cis="5.4.1.1, 5.4.1.2, 5.4.1.3, 5.4.1.6")
def test_password_ageing_of_accounts(node: PostureNode, host: Any) -> None:
    """Accounts with a password expire it within 365 days and warn 7 days ahead."""
    shadow = ok(gather(host, shadow="getent shadow")["shadow"], "getent shadow")
    today = int(time.time() // 86400)
    wrong = []
    for f in (line.split(":") for line in shadow.splitlines()):
        if len(f) < 6 or not f[1].startswith("$"):
            continue  # no usable password: locked ('!', '*') or key-only
        name, last, min_d, max_d, warn = f[0], _int(f[2]), _int(f[3]), _int(f[4]), _int(f[5])
        if not 0 < max_d <= 365:
            wrong.append(f"5.4.1.1 {name}: maximum age {f[4] or 'none'}")
        if min_d < 1:
            wrong.append(f"5.4.1.2 {name}: minimum age {f[3] or 'none'}")
        if warn < 7:
            wrong.append(f"5.4.1.3 {name}: warning {f[5] or 'none'} days")
        if last > today:
            wrong.append(f"5.4.1.6 {name}: last change {last} is in the future (today {today})")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OS-07", cis="5.4.2.6, 5.4.3.2, 5.4.3.3")
def test_login_shell_umask_and_timeout(node: PostureNode, host: Any) -> None:
    """Login shells start with umask 027 and a read-only TMOUT of at most 900 s."""
    probe = "umask; echo \"TMOUT=$TMOUT\"; readonly -p | grep -c ' TMOUT=' || true"
    out = gather(
        host,
        root=f"env -i HOME=/root PATH=/usr/sbin:/usr/bin bash --login -c '{probe}' </dev/null",
        operator=f"runuser -u {OPERATOR} -- env -i HOME=/home/{OPERATOR} "
        f"PATH=/usr/bin:/bin bash --login -c '{probe}' </dev/null",
    )
    wrong = []
    for who, res in out.items():
        lines = res.lines
        umask = lines[0] if lines else ""
        tmout = _int(lines[1].split("=", 1)[1] if len(lines) > 1 and "=" in lines[1] else "")
        if not umask.isdigit() or int(umask, 8) & 0o027 != 0o027:
            wrong.append(
                f"{who}'s login shell umask is {umask or 'unknown'} (expected 027 or stricter)"
            )
        if not 0 < tmout <= 900:
            wrong.append(
                f"{who}'s login shell TMOUT is {tmout if tmout >= 0 else 'unset'} (expected 1-900)"
            )
        elif len(lines) < 3 or lines[2] == "0":
            wrong.append(f"{who}'s TMOUT is not read-only")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- PAM ----------------------------------------------------------------------------

PAM_FILES = [
    "common-auth",
    "common-account",
    "common-password",
    "common-session",
    "common-session-noninteractive",
]


def _pam(host: Any, **extra: str) -> tuple[dict[str, list[list[str]]], dict[str, str]]:
    """The common-* PAM stacks, and the output of ``extra`` commands by name."""
    cmds = {f: f"cat /etc/pam.d/{f}" for f in PAM_FILES}
    out = gather(host, **cmds, **extra)
    stacks = {f: pam_lines(out[f].text) for f in PAM_FILES}
    return stacks, {k: v.text for k, v in out.items() if k not in PAM_FILES}


def _module_index(stack: list[list[str]], module: str, *args: str) -> int:
    for i, words in enumerate(stack):
        if len(words) >= 3 and words[2].endswith(module) and all(a in words[3:] for a in args):
            return i
    return -1


@pytest.mark.control("MLSL-OS-08", cis="5.3.1.2, 5.3.2.2, 5.3.3.1.1, 5.3.3.1.2, 5.3.3.1.3")
def test_pam_faillock_locks_after_failures(node: PostureNode, host: Any) -> None:
    """pam_faillock locks any account, root included, for 15 min after at most 5 failures."""
    stacks, other = _pam(
        host,
        conf="cat /etc/security/faillock.conf",
        pkg="dpkg-query -W -f='${db:Status-Abbrev}' libpam-modules",
    )
    conf = security_conf(other["conf"])
    auth = stacks["common-auth"]
    wrong = []
    if not other["pkg"].startswith("ii"):
        wrong.append("5.3.1.2 libpam-modules is not installed")
    pre = _module_index(auth, "pam_faillock.so", "preauth")
    unix = _module_index(auth, "pam_unix.so")
    fail = _module_index(auth, "pam_faillock.so", "authfail")
    if not (0 <= pre < unix < fail):
        wrong.append(
            "5.3.2.2 common-auth does not run faillock preauth, pam_unix, faillock authfail "
            f"in this order (lines {pre}, {unix}, {fail})"
        )
    if _module_index(stacks["common-account"], "pam_faillock.so") < 0:
        wrong.append("5.3.2.2 common-account has no pam_faillock.so")
    deny = _int(conf.get("deny"))
    if not 0 < deny <= 5:
        wrong.append(f"5.3.3.1.1 deny = {conf.get('deny', 'unset (3)')} (expected 1-5)")
    unlock = _int(conf.get("unlock_time"))
    if unlock != 0 and unlock < 900:
        wrong.append(
            f"5.3.3.1.2 unlock_time = {conf.get('unlock_time', 'unset (600)')} "
            "(expected 0 or >= 900)"
        )
    if "even_deny_root" not in conf and "root_unlock_time" not in conf:
        wrong.append("5.3.3.1.3 root is not locked (no even_deny_root)")
    elif "root_unlock_time" in conf and _int(conf["root_unlock_time"]) < 60:
        wrong.append(f"5.3.3.1.3 root_unlock_time = {conf['root_unlock_time']} (expected >= 60)")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OS-09", cis=cis("5.3.1.3", "5.3.2.3", "5.3.3.2.1-8"))
def test_pam_password_quality(node: PostureNode, host: Any) -> None:
    """pam_pwquality demands 14 characters, 3 classes, no runs, no dictionary words; root too."""
    stacks, other = _pam(
        host,
        conf="cat /etc/security/pwquality.conf /etc/security/pwquality.conf.d/*.conf "
        "2>/dev/null; true",
        pkg="dpkg-query -W -f='${db:Status-Abbrev}' libpam-pwquality",
    )
    conf = security_conf(other["conf"])
    wrong = []
    if not other["pkg"].startswith("ii"):
        wrong.append("5.3.1.3 libpam-pwquality is not installed")
    i = _module_index(stacks["common-password"], "pam_pwquality.so")
    if i < 0:
        wrong.append("5.3.2.3 common-password has no pam_pwquality.so")
    else:
        args = stacks["common-password"][i][3:]
        overridden = [
            a for a in args if a.split("=")[0] in ("minlen", "enforcing", "dictcheck", "difok")
        ]
        if overridden:
            wrong.append(f"5.3.3.2.x pam_pwquality.so overrides the configuration: {overridden}")
    rules: list[tuple[str, str, Callable[[str], bool], str]] = [
        ("5.3.3.2.1", "difok", lambda v: _int(v) >= 2, ">= 2"),
        ("5.3.3.2.2", "minlen", lambda v: _int(v) >= 14, ">= 14"),
        ("5.3.3.2.3", "minclass", lambda v: _int(v) >= 3, ">= 3"),
        ("5.3.3.2.4", "maxrepeat", lambda v: 0 < _int(v) <= 3, "1-3"),
        ("5.3.3.2.5", "maxsequence", lambda v: 0 < _int(v) <= 3, "1-3"),
        ("5.3.3.2.6", "dictcheck", lambda v: _int(v, 1) != 0, "not 0"),
        ("5.3.3.2.7", "enforcing", lambda v: _int(v, 1) != 0, "not 0"),
    ]
    for rule, key, good, expected in rules:
        if key not in conf and key not in ("dictcheck", "enforcing"):
            wrong.append(f"{rule} {key} unset (expected {expected})")
        elif key in conf and not good(conf[key]):
            wrong.append(f"{rule} {key} = {conf[key]} (expected {expected})")
    if "enforce_for_root" not in conf:
        wrong.append("5.3.3.2.8 enforce_for_root not set")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OS-09", cis=cis("5.3.2.1", "5.3.2.4", "5.3.3.3.1-3", "5.3.3.4.1-4"))
def test_pam_history_and_unix_hashing(node: PostureNode, host: Any) -> None:
    """Passwords are hashed with yescrypt, 24 are remembered, and no PAM stack allows empty ones."""
    stacks, other = _pam(host, conf="cat /etc/security/pwhistory.conf")
    conf = security_conf(other["conf"])
    password = stacks["common-password"]
    wrong = []
    unix = _module_index(password, "pam_unix.so")
    if unix < 0 or _module_index(stacks["common-auth"], "pam_unix.so") < 0:
        wrong.append("5.3.2.1 pam_unix.so missing from common-auth or common-password")
    hist = _module_index(password, "pam_pwhistory.so")
    if hist < 0 or (unix >= 0 and hist > unix):
        wrong.append("5.3.2.4 common-password has no pam_pwhistory.so before pam_unix.so")
    elif "use_authtok" not in password[hist]:
        wrong.append("5.3.3.3.3 pam_pwhistory.so without use_authtok")
    if _int(conf.get("remember")) < 24:
        wrong.append(
            f"5.3.3.3.1 pwhistory remember = {conf.get('remember', 'unset')} (expected >= 24)"
        )
    if "enforce_for_root" not in conf:
        wrong.append("5.3.3.3.2 pwhistory does not apply to root")
    for name, stack in stacks.items():
        for words in stack:
            if len(words) >= 3 and words[2].endswith("pam_unix.so"):
                if "nullok" in words[3:]:
                    wrong.append(f"5.3.3.4.1 {name}: pam_unix.so nullok")
                if any(a.startswith("remember=") for a in words[3:]):
                    wrong.append(f"5.3.3.4.2 {name}: pam_unix.so {' '.join(words[3:])}")
    if unix >= 0:
        args = password[unix][3:]
        if not {"yescrypt", "sha512"} & set(args):
            wrong.append(f"5.3.3.4.3 pam_unix.so password hash not yescrypt/sha512: {args}")
        if "use_authtok" not in args:
            wrong.append("5.3.3.4.4 pam_unix.so password without use_authtok")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- accounts ---------------------------------------------------------------------------


def _accounts(host: Any) -> dict[str, str]:
    out = gather(
        host,
        passwd="getent passwd",
        shadow="getent shadow",
        group="getent group",
        shells="cat /etc/shells",
        defs="cat /etc/login.defs",
    )
    return {k: ok(v, f"reading {k}") for k, v in out.items()}


@pytest.mark.control("MLSL-OS-10", cis="5.4.2.7, 5.4.2.8, 5.4.3.1")
def test_system_accounts_cannot_log_in(node: PostureNode, host: Any) -> None:
    """System accounts have a nologin shell and no usable password; nologin is no valid shell."""
    data = _accounts(host)
    uid_min = _int(words_config(data["defs"]).get("UID_MIN"), 1000)
    shells = {s.strip() for s in data["shells"].splitlines() if s.strip() and not s.startswith("#")}
    shadow = {
        f[0]: f[1] for f in (line.split(":") for line in data["shadow"].splitlines()) if len(f) > 1
    }
    wrong = []
    for f in _passwd(data["passwd"]):
        name, uid, shell = f[0], _int(f[2]), f[6]
        if uid < uid_min and name not in SHELL_EXEMPT and shell not in NOLOGIN_SHELLS:
            wrong.append(f"5.4.2.7 system account {name} (uid {uid}) has shell {shell}")
        if (
            name != "root"
            and shell not in shells
            and not shadow.get(name, "!").startswith(("!", "*"))
        ):
            wrong.append(f"5.4.2.8 {name} has no login shell but an unlocked password")
    wrong += [f"5.4.3.1 /etc/shells lists {s}" for s in sorted(shells) if s.endswith("nologin")]
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OS-11", cis="5.4.2.1, 5.4.2.2, 5.4.2.3, 5.4.2.4")
def test_root_is_the_only_uid_and_gid_0(node: PostureNode, host: Any) -> None:
    """Only root has uid 0 or primary gid 0, only group root has gid 0; root's password is set."""
    data = _accounts(host)
    passwd = _passwd(data["passwd"])
    uid0 = [f[0] for f in passwd if f[2] == "0"]
    gid0 = [
        f[0] for f in passwd if f[3] == "0" and f[0] not in ("sync", "shutdown", "halt", "operator")
    ]
    groups0 = [g.split(":")[0] for g in data["group"].splitlines() if g.split(":")[2:3] == ["0"]]
    root_pw = next(
        (line.split(":")[1] for line in data["shadow"].splitlines() if line.startswith("root:")), ""
    )
    wrong = []
    if uid0 != ["root"]:
        wrong.append(f"5.4.2.1 uid 0 accounts: {uid0}")
    if gid0 != ["root"]:
        wrong.append(f"5.4.2.2 accounts with primary gid 0: {gid0}")
    if groups0 != ["root"]:
        wrong.append(f"5.4.2.3 gid 0 groups: {groups0}")
    if root_pw == "":
        wrong.append("5.4.2.4 root has an empty password field")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]


@pytest.mark.control("MLSL-OS-11", cis=cis("7.2.1-8"), devsec="os-07")
def test_account_databases_consistent(node: PostureNode, host: Any) -> None:
    """passwd, shadow and group agree: shadowed, no empty passwords, no unknown or duplicate ids."""
    data = _accounts(host)
    passwd = _passwd(data["passwd"])
    groups = [g.split(":") for g in data["group"].splitlines() if g.count(":") >= 3]
    shadow = [s.split(":") for s in data["shadow"].splitlines() if ":" in s]
    gids = {g[2] for g in groups}
    wrong = [f"7.2.1 {f[0]} has its password in /etc/passwd" for f in passwd if f[1] != "x"]
    wrong += [f"7.2.2 {s[0]} has an empty password" for s in shadow if len(s) > 1 and s[1] == ""]
    wrong += [
        f"7.2.3 {f[0]} has primary gid {f[3]}, which no group has"
        for f in passwd
        if f[3] not in gids
    ]
    shadow_group = next((g for g in groups if g[0] == "shadow"), None)
    if shadow_group and shadow_group[3]:
        wrong.append(f"7.2.4 group shadow has members {shadow_group[3]}")
    if shadow_group:
        wrong += [
            f"7.2.4 {f[0]} has shadow as primary group" for f in passwd if f[3] == shadow_group[2]
        ]
    for rule, what, values in (
        ("7.2.5", "uids", [f[2] for f in passwd]),
        ("7.2.6", "gids", [g[2] for g in groups]),
        ("7.2.7", "user names", [f[0] for f in passwd]),
        ("7.2.8", "group names", [g[0] for g in groups]),
    ):
        dup = _duplicates(values)
        if dup:
            wrong.append(f"{rule} duplicate {what}: {dup}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# -- file permissions ---------------------------------------------------------------------

ACCOUNT_FILES = {
    "/etc/passwd": ("7.1.1", 0o644, {"root"}),
    "/etc/passwd-": ("7.1.2", 0o644, {"root"}),
    "/etc/group": ("7.1.3", 0o644, {"root"}),
    "/etc/group-": ("7.1.4", 0o644, {"root"}),
    "/etc/shadow": ("7.1.5", 0o640, {"root", "shadow"}),
    "/etc/shadow-": ("7.1.6", 0o640, {"root", "shadow"}),
    "/etc/gshadow": ("7.1.7", 0o640, {"root", "shadow"}),
    "/etc/gshadow-": ("7.1.8", 0o640, {"root", "shadow"}),
    "/etc/shells": ("7.1.9", 0o644, {"root"}),
    "/etc/security/opasswd": ("7.1.10", 0o600, {"root"}),
}
REQUIRED_ACCOUNT_FILES = {"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/shells"}


@pytest.mark.control("MLSL-OS-12", cis=cis("7.1.1-10"), devsec="os-02, os-03")
def test_account_file_permissions(node: PostureNode, host: Any) -> None:
    """passwd, group, shells 0644 root; shadow, gshadow 0640 root:shadow; opasswd 0600."""
    stats = parse_stats(gather(host, s=stat_command(list(ACCOUNT_FILES)))["s"].text)
    wrong = []
    for path, (rule, mode, groups) in ACCOUNT_FILES.items():
        st = stats.get(path)
        if st is None:
            if path in REQUIRED_ACCOUNT_FILES:
                wrong.append(f"{rule} {path} is missing")
            continue
        if too_open(st.mode, mode) or st.owner != "root" or st.group not in groups:
            wrong.append(
                f"{rule} {st} (expected at most {mode:04o} root:{'/'.join(sorted(groups))})"
            )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# The whole root filesystem of the node (datasets mounted on it included), not the
# kernel's and systemd's virtual ones.
_FIND = "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run \\) -prune -o"


# systemd's DynamicUser= services own their state under /var/{lib,cache,log}/private with
# a uid allocated at run time (61184-65519) that only resolves while they run.
DYNAMIC_UIDS = range(61184, 65520)


def _dynamic_user_state(uid: int, gid: int, path: str) -> bool:
    private = path.startswith(("/var/lib/private/", "/var/cache/private/", "/var/log/private/"))
    return private and uid in DYNAMIC_UIDS and gid in DYNAMIC_UIDS


@pytest.mark.control("MLSL-OS-12", cis="7.1.11, 7.1.12")
def test_no_world_writable_or_unowned_files(node: PostureNode, host: Any) -> None:
    """No world-writable file or unsticky directory, and nothing without an owner."""
    found = gather(
        host,
        f=f"{_FIND} \\( -type f -perm -0002 -printf 'W 0 0 %p\\n' \\) "
        "-o \\( -type d -perm -0002 ! -perm -1000 -printf 'D 0 0 %p\\n' \\) "
        "-o \\( \\( -nouser -o -nogroup \\) -printf 'U %U %G %p\\n' \\) 2>/dev/null; true",
    )["f"]
    wrong = []
    for line in found.lines:
        kind, uid, gid, path = line.split(" ", 3)
        if kind == "W":
            wrong.append(f"7.1.11 world-writable file {path}")
        elif kind == "D":
            wrong.append(f"7.1.11 world-writable directory without sticky bit {path}")
        elif not _dynamic_user_state(int(uid), int(gid), path):
            wrong.append(f"7.1.12 no owner or group ({uid}:{gid}): {path}")
    assert not wrong, f"{node.name}: {len(wrong)} found: " + "; ".join(wrong[:30])


# setuid/setgid programs a Debian 13 node may have (base system, OpenSSH, D-Bus, sudo,
# and on cloud images FUSE, util-linux's wall/write, utempter, cron).
SETID_ALLOWED = {
    "/usr/bin/chage",
    "/usr/bin/chfn",
    "/usr/bin/chsh",
    "/usr/bin/crontab",
    "/usr/bin/expiry",
    "/usr/bin/fusermount3",
    "/usr/bin/gpasswd",
    "/usr/bin/mount",
    "/usr/bin/newgrp",
    "/usr/bin/passwd",
    "/usr/bin/ssh-agent",
    "/usr/bin/su",
    "/usr/bin/sudo",
    "/usr/bin/umount",
    "/usr/bin/wall",
    "/usr/bin/write",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
    "/usr/lib/openssh/ssh-keysign",
    "/usr/lib/x86_64-linux-gnu/utempter/utempter",
    "/usr/lib/aarch64-linux-gnu/utempter/utempter",
    "/usr/sbin/unix_chkpwd",
}


@pytest.mark.control("MLSL-OS-12", cis="7.1.13", devsec="os-06")
def test_setuid_programs_allowlisted(node: PostureNode, host: Any) -> None:
    """Every setuid or setgid file on the node is one of Debian's known programs."""
    found = gather(
        host, f=f"{_FIND} -type f -perm /6000 -printf '%m %u:%g %p\\n' 2>/dev/null; true"
    )["f"]
    extra = [line for line in found.lines if line.split(" ", 2)[-1] not in SETID_ALLOWED]
    assert not extra, f"{node.name}: setuid/setgid outside the allowlist: " + "; ".join(extra)


CRON_PATHS = {
    "/etc/crontab": ("2.4.1.2", 0o600),
    "/etc/cron.hourly": ("2.4.1.3", 0o700),
    "/etc/cron.daily": ("2.4.1.4", 0o700),
    "/etc/cron.weekly": ("2.4.1.5", 0o700),
    "/etc/cron.monthly": ("2.4.1.6", 0o700),
    "/etc/cron.yearly": ("2.4.1.7", 0o700),
    "/etc/cron.d": ("2.4.1.8", 0o700),
}


@pytest.mark.control("MLSL-OS-13", cis=cis("2.4.1.2-8"), devsec="os-13")
def test_cron_files_root_only(node: PostureNode, host: Any) -> None:
    """The crontab and cron directories that exist are root's alone (og-rwx)."""
    stats = parse_stats(gather(host, s=stat_command(list(CRON_PATHS)))["s"].text)
    wrong = [
        f"{CRON_PATHS[p][0]} {st} (expected at most {CRON_PATHS[p][1]:04o} root:root)"
        for p, st in stats.items()
        if too_open(st.mode, CRON_PATHS[p][1]) or st.owner != "root" or st.group != "root"
    ]
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-OS-14", cis="7.2.10", devsec="os-01, os-09")
def test_no_host_trust_files(node: PostureNode, host: Any) -> None:
    """No hosts.equiv, shosts.equiv, .rhosts, .shosts or .netrc trusts hosts or holds passwords."""
    found = gather(
        host,
        f="ls -d /etc/hosts.equiv /etc/ssh/shosts.equiv 2>/dev/null; "
        "getent passwd | cut -d: -f6 | sort -u | while read -r h; do "
        '[ -d "$h" ] && for n in .rhosts .shosts .netrc; do [ -e "$h/$n" ] && echo "$h/$n"; done; '
        "done; true",
    )["f"]
    assert not found.lines, f"{node.name}: trust or credential files present: {found.lines}"


@pytest.mark.control("MLSL-OS-24", lynis="DEB-0280")
def test_sessions_get_a_private_tmpdir(node: PostureNode, host: Any) -> None:
    """pam_tmpdir gives every session a TMPDIR of its own (/tmp/user/<uid>, 0700)."""
    stacks, other = _pam(
        host,
        probe=f'su -l {OPERATOR} -s /bin/sh -c \'printf "%s\\n" "$TMPDIR" "$(id -u)"; '
        'stat -c %a:%U "$TMPDIR"\' </dev/null',
    )
    wrong = []
    if _module_index(stacks["common-session"], "pam_tmpdir.so") < 0:
        wrong.append("common-session has no pam_tmpdir.so")
    lines = other["probe"].splitlines()
    tmpdir, uid, perms = [*lines, "", "", ""][:3]
    if tmpdir != f"/tmp/user/{uid}" or perms != f"700:{OPERATOR}":
        wrong.append(
            f"a session of {OPERATOR} got TMPDIR={tmpdir or 'unset'} ({perms or 'missing'}), "
            f"expected /tmp/user/{uid or '<uid>'} 700:{OPERATOR}"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
