"""sshd on every node (roles/ssh, MLSL-SSH-*): key-only, on the management address only.

Two views, both required: ``sshd -T`` (the configuration sshd would run with,
read from its files, includes and defaults resolved) and a real login from the
operator's host over a fresh connection, whose verbose log shows what the sshd
that is running now offers: its algorithms, its authentication methods, its
banner and its host key. A file edited without a reload shows up in the first;
a running daemon with a stale configuration in the second.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlseclab.posture.plugin import PostureLab, PostureNode
from mlseclab.spec import OPERATOR_USER
from posture.nodeinfo import (
    gather,
    ok,
    parse_stats,
    probe_ok,
    probe_sshd,
    sshd_effective,
    stat_command,
    too_open,
)

ALLOW_GROUP = "sshusers"  # roles/ssh ssh_allow_group
OPERATOR = OPERATOR_USER  # the lab's automation account
SSH_PORT = 22

# Allowlists (OpenSSH 10 on Debian 13; sntrup761 and curve25519 keep OpenSSH 9 clients working).
PQ_KEX = {"mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com"}
KEX = PQ_KEX | {"curve25519-sha256", "curve25519-sha256@libssh.org"}
CIPHERS = {"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"}
MACS = {
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "umac-128-etm@openssh.com",
}
HOST_KEY_ALGORITHMS = {
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
}
# KEXINIT pseudo-algorithms that announce extensions, not key exchanges.
KEX_EXTENSIONS = {"ext-info-s", "ext-info-c", "kex-strict-s-v00@openssh.com"}


def _sshd(host: Any) -> dict[str, Any]:
    conf: dict[str, Any] = sshd_effective(ok(gather(host, t="sshd -T")["t"], "sshd -T"))
    return conf


def _expect(conf: dict[str, Any], wanted: dict[str, str]) -> list[str]:
    return [
        f"{key} {conf.get(key, 'unset')} (expected {value})"
        for key, value in wanted.items()
        if str(conf.get(key, "")).lower() != value
    ]


@pytest.mark.control(
    "MLSL-SSH-02",
    cis="5.1.9, 5.1.10, 5.1.11, 5.1.20, 5.1.23",
    devsec="sshd-22, sshd-23, sshd-25, sshd-27, sshd-28, sshd-29, sshd-30, sshd-33",
    atlas="AML.T0012",
)
def test_sshd_accepts_public_keys_only(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """sshd accepts public keys only: no password, keyboard-interactive, host-based or GSSAPI."""
    wrong = _expect(
        _sshd(host),
        {
            "authenticationmethods": "publickey",
            "pubkeyauthentication": "yes",
            "passwordauthentication": "no",
            "kbdinteractiveauthentication": "no",
            "permitemptypasswords": "no",
            "hostbasedauthentication": "no",
            "ignorerhosts": "yes",
            "gssapiauthentication": "no",
            "kerberosauthentication": "no",
            "usepam": "yes",
        },
    )
    probe = probe_sshd(lab, node)
    probe_ok(probe, node)
    if probe.methods != ("publickey",):
        wrong.append(
            f"the running sshd offers {','.join(probe.methods) or 'nothing'} (expected publickey)"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-SSH-02", cis="5.1.21", devsec="sshd-06")
def test_sshd_refuses_root(node: PostureNode, host: Any) -> None:
    """sshd refuses root logins (PermitRootLogin no)."""
    value = _sshd(host).get("permitrootlogin")
    assert value == "no", f"{node.name}: PermitRootLogin {value} (expected no)"


@pytest.mark.control(
    "MLSL-SSH-03", cis="5.1.6, 5.1.12, 5.1.13, 5.1.16", devsec="sshd-01, sshd-02, sshd-03"
)
def test_sshd_strong_algorithms_only(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """sshd offers only AEAD ciphers, ETM MACs and curve25519/post-quantum key exchange."""
    conf = _sshd(host)
    probe = probe_sshd(lab, node)
    probe_ok(probe, node)
    views = {
        "sshd -T": {
            "kex": conf.get("kexalgorithms", "").split(","),
            "ciphers": conf.get("ciphers", "").split(","),
            "macs": conf.get("macs", "").split(","),
            "host keys": conf.get("hostkeyalgorithms", "").split(","),
        },
        "running sshd": {
            "kex": [k for k in probe.kex if k not in KEX_EXTENSIONS],
            "ciphers": list(probe.ciphers),
            "macs": list(probe.macs),
            "host keys": list(probe.host_key_algorithms),
        },
    }
    allowed = {"kex": KEX, "ciphers": CIPHERS, "macs": MACS, "host keys": HOST_KEY_ALGORITHMS}
    wrong = []
    for view, lists in views.items():
        for what, values in lists.items():
            weak = sorted({v for v in values if v} - allowed[what])
            if weak:
                wrong.append(f"{view} {what}: {', '.join(weak)} not allowed")
        kex = [k for k in lists["kex"] if k]
        if not kex or kex[0] not in PQ_KEX:
            wrong.append(
                f"{view} prefers {kex[0] if kex else 'nothing'} "
                "(expected a post-quantum hybrid first)"
            )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _startups(value: str) -> tuple[int, int, int]:
    parts = [int(p) for p in value.split(":")] if value else [0]
    start = parts[0]
    return (start, parts[1], parts[2]) if len(parts) == 3 else (start, 100, start)


@pytest.mark.control(
    "MLSL-SSH-04",
    cis="5.1.7, 5.1.14, 5.1.17, 5.1.18, 5.1.19",
    devsec="sshd-18, sshd-19, sshd-20, sshd-21, sshd-36, sshd-37",
    owasp="LLM10",
)
def test_sshd_limits_attempts_and_idle_sessions(node: PostureNode, host: Any) -> None:
    """sshd limits auth tries, sessions, unauthenticated starts, login grace and idle clients."""
    conf = _sshd(host)
    wrong = []
    tries = int(conf.get("maxauthtries", "6"))
    if not 0 < tries <= 4:
        wrong.append(f"5.1.17 MaxAuthTries {tries} (expected 1-4)")
    sessions = int(conf.get("maxsessions", "10"))
    if not 0 < sessions <= 10:
        wrong.append(f"5.1.18 MaxSessions {sessions} (expected 1-10)")
    start, rate, full = _startups(conf.get("maxstartups", ""))
    if start > 10 or rate < 30 or full > 60 or start <= 0:
        wrong.append(
            f"5.1.19 MaxStartups {conf.get('maxstartups')} (expected 10:30:60 or stricter)"
        )
    grace = int(conf.get("logingracetime", "120"))
    if not 0 < grace <= 60:
        wrong.append(f"5.1.14 LoginGraceTime {grace} (expected 1-60)")
    interval, count = (
        int(conf.get("clientaliveinterval", "0")),
        int(conf.get("clientalivecountmax", "0")),
    )
    if not (0 < interval <= 900 and 0 < count <= 3):
        wrong.append(
            f"5.1.7 ClientAliveInterval {interval}, ClientAliveCountMax {count} "
            "(expected 1-900, 1-3)"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _penalty_seconds(value: str) -> int:
    """An sshd time value (``90``, ``90s``, ``10m``, ``1h``) in seconds; -1 if unreadable."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total, number = 0, ""
    for ch in value.lower():
        if ch.isdigit():
            number += ch
        elif ch in units and number:
            total, number = total + int(number) * units[ch], ""
        else:
            return -1
    return total + (int(number) if number else 0)


@pytest.mark.control("MLSL-SSH-12", owasp="LLM10")
def test_sshd_penalises_brute_force(node: PostureNode, host: Any) -> None:
    """sshd refuses, for a while, a source that fails authentication or never authenticates,
    and caps its unauthenticated connections (OpenSSH's in-daemon fail2ban equivalent)."""
    conf = _sshd(host)
    wrong = []
    penalties = str(conf.get("persourcepenalties", "no"))
    terms = dict(t.split(":", 1) for t in penalties.split() if ":" in t)
    if penalties.lower() in ("no", "") or not terms:
        wrong.append(f"PerSourcePenalties {penalties} (expected penalties on)")
    else:
        for key in ("authfail", "noauth", "crash"):
            if _penalty_seconds(terms.get(key, "0")) <= 0:
                wrong.append(f"PerSourcePenalties {key}:{terms.get(key, 'unset')} (expected > 0)")
    startups = str(conf.get("persourcemaxstartups", "none"))
    if not startups.isdigit() or not 0 < int(startups) <= 10:
        wrong.append(f"PerSourceMaxStartups {startups} (expected 1-10)")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control(
    "MLSL-SSH-05",
    cis="5.1.8, 5.1.22",
    devsec="sshd-17, sshd-38, sshd-39, sshd-40, sshd-41, sshd-42",
    atlas="AML.T0025",
)
def test_sshd_forwards_nothing(node: PostureNode, host: Any) -> None:
    """sshd forwards nothing (TCP, agent, X11, tunnels) and ignores users' environment files."""
    wrong = _expect(
        _sshd(host),
        {
            "disableforwarding": "yes",
            "allowtcpforwarding": "no",
            "allowagentforwarding": "no",
            "allowstreamlocalforwarding": "no",
            "x11forwarding": "no",
            "gatewayports": "no",
            "permittunnel": "no",
            "permituserenvironment": "no",
            "permituserrc": "no",
        },
    )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-SSH-06", devsec="sshd-07, sshd-08, sshd-09")
def test_sshd_listens_on_mgmt_only(node: PostureNode, host: Any) -> None:
    """sshd listens on the node's management address only, IPv4, port 22."""
    mgmt = node.topo.mgmt.ip
    out = gather(host, t="sshd -T", ss="ss -Htlnp")
    conf = sshd_effective(ok(out["t"], "sshd -T"))
    wrong = []
    if conf.get("listenaddress") != [f"{mgmt}:{SSH_PORT}"]:
        wrong.append(f"ListenAddress {conf.get('listenaddress')} (expected ['{mgmt}:{SSH_PORT}'])")
    if conf.get("addressfamily") != "inet":
        wrong.append(f"AddressFamily {conf.get('addressfamily')} (expected inet)")
    bound = sorted(
        line.split()[3] for line in out["ss"].lines if '"sshd"' in line and len(line.split()) > 3
    )
    if bound != [f"{mgmt}:{SSH_PORT}"]:
        wrong.append(f"the running sshd listens on {bound} (expected only {mgmt}:{SSH_PORT})")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-SSH-01", cis="5.1.4")
def test_sshd_allows_only_its_group(node: PostureNode, host: Any) -> None:
    """Only members of sshusers may log in over SSH, and the operator is one of them."""
    out = gather(host, t="sshd -T", group=f"getent group {ALLOW_GROUP}")
    conf = sshd_effective(ok(out["t"], "sshd -T"))
    wrong = []
    if conf.get("allowgroups") != [ALLOW_GROUP]:
        wrong.append(f"AllowGroups {conf.get('allowgroups', 'unset')} (expected [{ALLOW_GROUP!r}])")
    if conf.get("allowusers"):
        wrong.append(f"AllowUsers {conf['allowusers']} widens access beyond the group")
    members = out["group"].text.strip().split(":")[3].split(",") if out["group"].rc == 0 else []
    if OPERATOR not in members:
        wrong.append(f"the operator {OPERATOR} is not in {ALLOW_GROUP} (members: {members})")
    if "root" in members:
        wrong.append(f"root is a member of {ALLOW_GROUP}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-SSH-07", cis="5.1.15", devsec="sshd-12, sshd-13")
def test_sshd_logs_verbosely(node: PostureNode, host: Any) -> None:
    """sshd logs at VERBOSE to the auth facility (key fingerprints of every login)."""
    wrong = _expect(_sshd(host), {"loglevel": "verbose", "syslogfacility": "auth"})
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-SSH-08", devsec="sshd-35")
def test_sshd_no_compression_dns_or_tcp_keepalive(
    node: PostureNode, host: Any, lab: PostureLab
) -> None:
    """sshd compresses nothing, does no reverse DNS and sends no spoofable TCP keepalives."""
    wrong = _expect(_sshd(host), {"compression": "no", "usedns": "no", "tcpkeepalive": "no"})
    probe = probe_sshd(lab, node)
    probe_ok(probe, node)
    if set(probe.compression) != {"none"}:
        wrong.append(f"the running sshd offers compression {','.join(probe.compression)}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


BANNER = "/etc/issue.net"
OS_ESCAPES = ("\\m", "\\r", "\\s", "\\v")


@pytest.mark.control("MLSL-SSH-09", cis="5.1.5, 1.6.3, 1.6.6")
def test_sshd_shows_a_neutral_banner(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """sshd shows the /etc/issue.net banner before login, naming no OS; only root may change it."""
    out = gather(
        host,
        t="sshd -T",
        text=f"cat {BANNER}",
        os="sed -n 's/^ID=//p' /etc/os-release | tr -d '\"'",
        perms=stat_command([BANNER]),
    )
    conf = sshd_effective(ok(out["t"], "sshd -T"))
    text = out["text"].text.strip() if out["text"].rc == 0 else ""
    wrong = []
    if conf.get("banner") != BANNER:
        wrong.append(f"5.1.5 Banner {conf.get('banner')} (expected {BANNER})")
    if not text:
        wrong.append(f"5.1.5 {BANNER} is missing or empty")
    os_id = out["os"].text.strip().lower()
    leaks = [e for e in OS_ESCAPES if e in text] + (
        [os_id] if os_id and os_id in text.lower() else []
    )
    if leaks:
        wrong.append(f"1.6.3 {BANNER} reveals the system: {leaks}")
    st = parse_stats(out["perms"].text).get(BANNER)
    if st is not None and (too_open(st.mode, 0o644) or st.owner != "root" or st.group != "root"):
        wrong.append(f"1.6.6 {st} (expected at most 0644 root:root)")
    if text:
        probe = probe_sshd(lab, node)
        probe_ok(probe, node)
        if text.splitlines()[0] not in probe.log:
            wrong.append("5.1.5 the running sshd did not show the banner to the operator")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-SSH-10")
def test_ssh_service_not_socket_activated(node: PostureNode, host: Any) -> None:
    """ssh.service runs after network-online; ssh.socket (it ignores ListenAddress) is masked."""
    out = gather(
        host,
        service="systemctl show ssh.service -p UnitFileState -p ActiveState -p After",
        socket="systemctl show ssh.socket -p LoadState -p ActiveState",
    )
    svc = dict(line.split("=", 1) for line in out["service"].lines if "=" in line)
    sock = dict(line.split("=", 1) for line in out["socket"].lines if "=" in line)
    wrong = []
    if svc.get("UnitFileState") != "enabled" or svc.get("ActiveState") != "active":
        wrong.append(f"ssh.service is {svc.get('UnitFileState')}/{svc.get('ActiveState')}")
    if "network-online.target" not in svc.get("After", "").split():
        wrong.append("ssh.service does not start after network-online.target")
    if sock.get("LoadState") != "masked" or sock.get("ActiveState") == "active":
        wrong.append(
            f"ssh.socket is {sock.get('LoadState')}/{sock.get('ActiveState')} (expected masked)"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-SSH-11", cis="5.1.2, 5.1.3", devsec="sshd-14")
def test_sshd_host_keys_protected(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """sshd uses its ed25519 host key only; private keys are 0600 root, public ones at most 0644."""
    out = gather(
        host,
        t="sshd -T",
        keys="for f in /etc/ssh/ssh_host_*; do stat -c '%a|%U|%G|%F|%n' \"$f\"; done",
        fp="ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub",
    )
    conf = sshd_effective(ok(out["t"], "sshd -T"))
    wrong = []
    if conf.get("hostkey") != ["/etc/ssh/ssh_host_ed25519_key"]:
        wrong.append(f"HostKey {conf.get('hostkey')} (expected the ed25519 key only)")
    for st in parse_stats(out["keys"].text).values():
        public = st.path.endswith(".pub")
        limit = 0o644 if public else 0o600
        if too_open(st.mode, limit) or st.owner != "root" or st.group != "root":
            rule = "5.1.3" if public else "5.1.2"
            wrong.append(f"{rule} {st} (expected at most {limit:04o} root:root)")
    probe = probe_sshd(lab, node)
    probe_ok(probe, node)
    words = out["fp"].text.split()
    fingerprint = words[1] if len(words) > 1 else "?"
    if probe.host_key != f"ssh-ed25519 {fingerprint}":
        wrong.append(
            f"the running sshd presents {probe.host_key or 'no key'}, "
            f"not the ed25519 key on disk {fingerprint}"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-SSH-02", cis="5.1.1", devsec="sshd-04, sshd-05")
def test_sshd_config_root_only_and_whole(node: PostureNode, host: Any) -> None:
    """sshd_config is 0600 root, valid and whole; sshd_config.d is empty and root's alone."""
    out = gather(
        host,
        perms=stat_command(["/etc/ssh", "/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d"]),
        dropins="find /etc/ssh/sshd_config.d -mindepth 1 -maxdepth 1 2>/dev/null; true",
        includes="grep -niE '^[[:space:]]*include[[:space:]]' /etc/ssh/sshd_config; true",
        valid="sshd -t",
    )
    stats = parse_stats(out["perms"].text)
    limits = {"/etc/ssh": 0o755, "/etc/ssh/sshd_config": 0o600, "/etc/ssh/sshd_config.d": 0o700}
    wrong = []
    for path, limit in limits.items():
        st = stats.get(path)
        if st is None:
            if path != "/etc/ssh/sshd_config.d":
                wrong.append(f"{path} is missing")
        elif too_open(st.mode, limit) or st.owner != "root" or st.group != "root":
            wrong.append(f"{st} (expected at most {limit:04o} root:root)")
    if out["dropins"].lines:
        wrong.append(f"drop-ins in sshd_config.d: {out['dropins'].lines}")
    if out["includes"].lines:
        wrong.append(f"sshd_config includes other files: {out['includes'].lines}")
    if out["valid"].rc != 0:
        wrong.append(f"sshd -t rejects the configuration: {out['valid'].text.strip()[:200]}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
