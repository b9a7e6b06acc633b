"""Tampers for the OS, account, SSH, firewall and socket checks (test_os, test_accounts,
test_ssh, test_firewall, test_sockets).

The format is tampers.py's: ``apply`` and ``revert`` run as root on the node
(``sudo sh -s``) and are ``str.format``-ed with ``{mgmt}``, ``{service}``,
``{operator}`` and ``{table}`` (literal braces are doubled). A changed file is
copied to /root/tamper-<name>.bak first and copied back with ``cp -p``
(content, mode, owner, times); a changed mode is saved and restored the same
way. sshd is reloaded (never restarted) only where the check reads the running
daemon, so open sessions stay; without a reload ``sshd -T`` alone sees the change.
"""

from __future__ import annotations

if __package__:  # imported as posture.tampers_a (the test suite's pythonpath has tests/)
    from .tampers import _DELETE_TAMPER_RULES, Tamper
else:  # imported beside tampers.py (tests/posture on sys.path)
    from tampers import _DELETE_TAMPER_RULES, Tamper


def _edit(name: str, path: str, script: str) -> str:
    """Back ``path`` up, then edit it with sed ``script`` (which must change something)."""
    bak = f"/root/tamper-{name}.bak"
    return f"cp -p {path} {bak} && sed -i {script} {path} && ! cmp -s {path} {bak}"


def _restore(name: str, path: str) -> str:
    return f"cp -p /root/tamper-{name}.bak {path} && rm -f /root/tamper-{name}.bak"


def _chmod(name: str, path: str, mode: str) -> tuple[str, str]:
    bak = f"/root/tamper-{name}.mode"
    return (
        f"stat -c %a {path} > {bak} && chmod {mode} {path}",
        f'chmod "$(cat {bak})" {path} && rm -f {bak}',
    )


SSHD = "/etc/ssh/sshd_config"
RELOAD_SSHD = "sshd -t && systemctl reload ssh.service"


def _sshd(name: str, script: str, reload: bool = False) -> tuple[str, str]:
    apply = _edit(name, SSHD, script)
    revert = _restore(name, SSHD)
    if reload:
        apply, revert = f"{apply} && {RELOAD_SSHD}", f"{revert} && {RELOAD_SSHD}"
    return apply, revert


def _fake_package(name: str, package: str) -> tuple[str, str]:
    """Install an empty package named ``package`` (the lab has no archive to fetch from)."""
    d = f"/root/tamper-{name}"
    control = (
        f"Package: {package}\\nVersion: 99.0-tamper\\nArchitecture: all\\n"
        "Maintainer: mlseclab posture <root@localhost>\\n"
        "Description: posture tamper, an empty package\\n"
    )
    return (
        f"! dpkg-query -W -f='${{{{db:Status-Abbrev}}}}' {package} 2>/dev/null | grep -q '^ii'"
        f" && umask 022 && mkdir -p {d}/pkg/DEBIAN"
        f" && printf '{control}' > {d}/pkg/DEBIAN/control"
        f" && dpkg-deb -b {d}/pkg {d}/{package}.deb >/dev/null"
        f" && dpkg -i {d}/{package}.deb >/dev/null",
        f"dpkg --purge {package} >/dev/null && rm -rf {d}",
    )


def _wait_listening(port: int, seconds: int = 60) -> str:
    """Wait until something listens on TCP ``port`` (a started service may take a moment)."""
    check = f"ss -Htln 'sport = :{port}' | grep -q LISTEN"
    loop = f'until {check}; do i=$((i+1)); [ "$i" -ge {seconds} ] && break; sleep 1; done'
    return f"i=0; {loop}; {check}"


def _na_emptied() -> tuple[str, str]:
    path = "/etc/mlseclab/not-applicable.d/base.json"
    bak = "/root/tamper-na-report-emptied.bak"
    return f"cp -p {path} {bak} && echo '[]' > {path}", f"cp -p {bak} {path} && rm -f {bak}"


_SHADOW_MODE = _chmod("shadow-world-readable", "/etc/shadow", "0644")
_CRON_MODE = _chmod("cron-daily-open", "/etc/cron.daily", "0755")
_HOSTKEY_MODE = _chmod("hostkey-pub-writable", "/etc/ssh/ssh_host_ed25519_key.pub", "0666")
_PASSWORD_AUTH = _sshd(
    "sshd-password-auth",
    "-e 's/^PasswordAuthentication no$/PasswordAuthentication yes/' "
    "-e 's/^AuthenticationMethods publickey$/AuthenticationMethods any/'",
    reload=True,
)
_ROOT_LOGIN = _sshd(
    "sshd-root-login", "'s/^PermitRootLogin no$/PermitRootLogin prohibit-password/'"
)
_WEAK_CIPHER = _sshd("sshd-weak-cipher", "'s/^Ciphers .*/&,aes128-cbc/'", reload=True)
_AUTH_TRIES = _sshd("sshd-max-auth-tries", "'s/^MaxAuthTries .*/MaxAuthTries 6/'")
_PENALTIES = _sshd(
    "sshd-penalties-off",
    "-e 's/^PerSourcePenalties .*/PerSourcePenalties no/' "
    "-e 's/^PerSourceMaxStartups .*/PerSourceMaxStartups none/'",
)
_FORWARDING = _sshd(
    "sshd-tcp-forwarding",
    "-e 's/^DisableForwarding yes$/DisableForwarding no/' "
    "-e 's/^AllowTcpForwarding no$/AllowTcpForwarding yes/'",
)
_LISTEN_ANY = _sshd(
    "sshd-listen-any", "'s/^ListenAddress .*/ListenAddress 0.0.0.0:22/'", reload=True
)
_ALLOW_GROUPS = _sshd("sshd-allow-groups", "'s/^AllowGroups .*/& users/'")
_LOG_LEVEL = _sshd("sshd-log-level", "'s/^LogLevel VERBOSE$/LogLevel INFO/'")
_COMPRESSION = _sshd("sshd-compression", "'s/^Compression no$/Compression yes/'", reload=True)
_CHRONY = _fake_package("package-chrony", "chrony")
_NA = _na_emptied()

TAMPERS: list[Tamper] = [
    # --- OS: sysctl, core dumps, audit, AIDE, journald, upgrades, packages -------------------
    Tamper(
        name="net-sysctl-redirects-live",
        node="rag-01",
        breaks=("test_network_sysctls",),
        apply="sysctl -n net.ipv4.conf.all.accept_redirects > /root/tamper-net-sysctl.bak"
        " && sysctl -qw net.ipv4.conf.all.accept_redirects=1",
        revert='sysctl -qw net.ipv4.conf.all.accept_redirects="$(cat /root/tamper-net-sysctl.bak)"'
        " && rm -f /root/tamper-net-sysctl.bak",
    ),
    Tamper(
        name="net-sysctl-boot-override",
        node="vectordb-01",
        breaks=("test_network_sysctls",),
        apply="echo 'net.ipv4.conf.all.send_redirects = 1' > /etc/sysctl.d/99-tamper.conf",
        revert="rm -f /etc/sysctl.d/99-tamper.conf",
    ),
    Tamper(
        name="na-report-emptied",
        node="inference-01",
        breaks=(
            "test_kernel_sysctls",
            "test_unused_modules_not_loadable",
            "test_temporary_mounts_restricted",
            "test_auditd_running_with_retention",
            "test_time_synchronised_from_authorised_servers",
            "test_apparmor_enforcing",
            "test_process_accounting",
        ),
        apply=_NA[0],
        revert=_NA[1],
    ),
    Tamper(
        name="coredump-limit-removed",
        node="gateway-01",
        breaks=("test_core_dumps_disabled",),
        apply="mv /etc/security/limits.d/60-mlseclab-coredump.conf /root/tamper-coredump.bak",
        revert="mv /root/tamper-coredump.bak /etc/security/limits.d/60-mlseclab-coredump.conf",
    ),
    Tamper(
        name="audit-not-immutable",
        node="obs-01",
        breaks=("test_audit_rules_cover_the_catalogue",),
        apply=_edit(
            "audit-not-immutable", "/etc/audit/rules.d/99-finalize.rules", "'s/^-e 2$/-e 1/'"
        ),
        revert=_restore("audit-not-immutable", "/etc/audit/rules.d/99-finalize.rules"),
    ),
    Tamper(
        name="setuid-program-added",
        node="rag-01",
        breaks=("test_setuid_programs_allowlisted", "test_audit_rules_cover_the_catalogue"),
        apply="cp /usr/bin/true /usr/bin/tamper-setuid && chmod 4755 /usr/bin/tamper-setuid",
        revert="rm -f /usr/bin/tamper-setuid",
    ),
    Tamper(
        name="aide-timer-off",
        node="vectordb-01",
        breaks=("test_aide_checks_integrity_daily",),
        apply="systemctl disable --now --quiet mlseclab-aide-check.timer",
        revert="systemctl enable --now --quiet mlseclab-aide-check.timer",
    ),
    Tamper(
        name="journald-volatile",
        node="gateway-01",
        breaks=("test_journald_persistent_compressed_bounded",),
        apply="printf '[Journal]\\nStorage=volatile\\n'"
        " > /etc/systemd/journald.conf.d/99-tamper.conf",
        revert="rm -f /etc/systemd/journald.conf.d/99-tamper.conf",
    ),
    Tamper(
        name="journald-forwards-to-syslog",
        node="inference-01",
        breaks=("test_journald_not_forwarded_to_syslog",),
        apply="printf '[Journal]\\nForwardToSyslog=yes\\n'"
        " > /etc/systemd/journald.conf.d/zz-tamper.conf",
        revert="rm -f /etc/systemd/journald.conf.d/zz-tamper.conf",
    ),
    Tamper(
        name="journal-shipping-stopped",
        node="rag-01",
        breaks=("test_journal_shipped_to_observability",),
        apply="systemctl stop systemd-journal-upload.service",
        revert="systemctl start systemd-journal-upload.service",
    ),
    Tamper(
        name="unattended-upgrades-off",
        node="obs-01",
        breaks=("test_unattended_security_upgrades",),
        apply="echo 'APT::Periodic::Unattended-Upgrade \"0\";' > /etc/apt/apt.conf.d/99tamper",
        revert="rm -f /etc/apt/apt.conf.d/99tamper",
    ),
    Tamper(
        name="package-chrony",
        node="gateway-01",
        breaks=("test_insecure_packages_absent_and_servers_off",),
        apply=_CHRONY[0],
        revert=_CHRONY[1],
    ),
    Tamper(
        name="web-server-enabled-off-gateway",
        node="rag-01",
        breaks=("test_insecure_packages_absent_and_servers_off",),
        apply="systemctl enable --quiet nginx.service",
        revert="systemctl disable --quiet nginx.service",
    ),
    # --- accounts, PAM, shells, permissions ---------------------------------------------------
    Tamper(
        name="login-defs-umask",
        node="vectordb-01",
        breaks=("test_login_defs",),
        apply=_edit(
            "login-defs-umask", "/etc/login.defs", "-E 's/^UMASK[[:space:]]+027$/UMASK 022/'"
        ),
        revert=_restore("login-defs-umask", "/etc/login.defs"),
    ),
    Tamper(
        name="system-account-password",
        node="gateway-01",
        breaks=("test_password_ageing_of_accounts", "test_system_accounts_cannot_log_in"),
        # a hash-shaped value (no password hashes to it) and no ageing for games
        apply=_edit(
            "system-account-password",
            "/etc/shadow",
            "'s/^games:[^:]*:\\([0-9]*\\):[^:]*:[^:]*:/games:$y$j9T$tamper$tamper:\\1:0:99999:/'",
        ),
        revert=_restore("system-account-password", "/etc/shadow"),
    ),
    Tamper(
        name="profile-umask",
        node="inference-01",
        breaks=("test_login_shell_umask_and_timeout",),
        apply=_edit(
            "profile-umask", "/etc/profile.d/mlseclab-shell.sh", "'s/^umask 027$/umask 022/'"
        ),
        revert=_restore("profile-umask", "/etc/profile.d/mlseclab-shell.sh"),
    ),
    Tamper(
        name="faillock-off",
        node="rag-01",
        breaks=("test_pam_faillock_locks_after_failures",),
        apply=_edit("faillock-off", "/etc/security/faillock.conf", "'s/^deny = .*/deny = 0/'"),
        revert=_restore("faillock-off", "/etc/security/faillock.conf"),
    ),
    Tamper(
        name="pwquality-short",
        node="obs-01",
        breaks=("test_pam_password_quality",),
        apply=_edit(
            "pwquality-short", "/etc/security/pwquality.conf", "'s/^minlen = .*/minlen = 8/'"
        ),
        revert=_restore("pwquality-short", "/etc/security/pwquality.conf"),
    ),
    Tamper(
        name="pam-nullok",
        node="vectordb-01",
        breaks=("test_pam_history_and_unix_hashing",),
        apply=_edit(
            "pam-nullok", "/etc/pam.d/common-auth", "'s/pam_unix\\.so$/pam_unix.so nullok/'"
        ),
        revert=_restore("pam-nullok", "/etc/pam.d/common-auth"),
    ),
    Tamper(
        name="second-uid-0",
        node="obs-01",
        breaks=("test_root_is_the_only_uid_and_gid_0", "test_account_databases_consistent"),
        apply=_edit(
            "second-uid-0",
            "/etc/passwd",
            "'$a toor:x:0:0:posture tamper:/nonexistent:/usr/sbin/nologin'",
        ),
        revert=_restore("second-uid-0", "/etc/passwd"),
    ),
    Tamper(
        name="shadow-world-readable",
        node="rag-01",
        breaks=("test_account_file_permissions",),
        apply=_SHADOW_MODE[0],
        revert=_SHADOW_MODE[1],
    ),
    Tamper(
        name="world-writable-file",
        node="gateway-01",
        breaks=("test_no_world_writable_or_unowned_files",),
        apply="touch /etc/tamper-world-writable && chmod 0666 /etc/tamper-world-writable",
        revert="rm -f /etc/tamper-world-writable",
    ),
    Tamper(
        name="cron-daily-open",
        node="obs-01",
        breaks=("test_cron_files_root_only",),
        apply=_CRON_MODE[0],
        revert=_CRON_MODE[1],
    ),
    Tamper(
        name="root-rhosts",
        node="vectordb-01",
        breaks=("test_no_host_trust_files",),
        apply="test ! -e /root/.rhosts && echo '+ +' > /root/.rhosts",
        revert="rm -f /root/.rhosts",
    ),
    # --- sshd --------------------------------------------------------------------------------
    Tamper(
        name="sshd-password-auth",
        node="inference-01",
        breaks=("test_sshd_accepts_public_keys_only",),
        apply=_PASSWORD_AUTH[0],
        revert=_PASSWORD_AUTH[1],
    ),
    Tamper(
        name="sshd-root-login",
        node="gateway-01",
        breaks=("test_sshd_refuses_root",),
        apply=_ROOT_LOGIN[0],
        revert=_ROOT_LOGIN[1],
    ),
    Tamper(
        name="sshd-weak-cipher",
        node="vectordb-01",
        breaks=("test_sshd_strong_algorithms_only",),
        apply=_WEAK_CIPHER[0],
        revert=_WEAK_CIPHER[1],
    ),
    Tamper(
        name="sshd-max-auth-tries",
        node="rag-01",
        breaks=("test_sshd_limits_attempts_and_idle_sessions",),
        apply=_AUTH_TRIES[0],
        revert=_AUTH_TRIES[1],
    ),
    Tamper(
        name="sshd-tcp-forwarding",
        node="obs-01",
        breaks=("test_sshd_forwards_nothing",),
        apply=_FORWARDING[0],
        revert=_FORWARDING[1],
    ),
    Tamper(
        name="sshd-listen-any",
        node="gateway-01",
        breaks=(
            "test_sshd_listens_on_mgmt_only",
            "test_only_approved_sockets_listen",
            "test_every_approved_socket_listens",
        ),
        apply=_LISTEN_ANY[0],
        revert=_LISTEN_ANY[1],
    ),
    Tamper(
        name="sshd-allow-groups",
        node="rag-01",
        breaks=("test_sshd_allows_only_its_group",),
        apply=_ALLOW_GROUPS[0],
        revert=_ALLOW_GROUPS[1],
    ),
    Tamper(
        name="sshd-log-level",
        node="vectordb-01",
        breaks=("test_sshd_logs_verbosely",),
        apply=_LOG_LEVEL[0],
        revert=_LOG_LEVEL[1],
    ),
    Tamper(
        name="sshd-compression",
        node="inference-01",
        breaks=("test_sshd_no_compression_dns_or_tcp_keepalive",),
        apply=_COMPRESSION[0],
        revert=_COMPRESSION[1],
    ),
    Tamper(
        name="banner-names-os",
        node="obs-01",
        breaks=("test_sshd_shows_a_neutral_banner",),
        apply="cp -p /etc/issue.net /root/tamper-banner-names-os.bak"
        " && echo 'Debian GNU/Linux 13' > /etc/issue.net",
        revert=_restore("banner-names-os", "/etc/issue.net"),
    ),
    Tamper(
        name="ssh-socket-unmasked",
        node="gateway-01",
        breaks=("test_ssh_service_not_socket_activated",),
        apply="systemctl unmask --quiet ssh.socket",
        revert="systemctl mask --quiet ssh.socket",
    ),
    Tamper(
        name="hostkey-pub-writable",
        node="vectordb-01",
        breaks=("test_sshd_host_keys_protected",),
        apply=_HOSTKEY_MODE[0],
        revert=_HOSTKEY_MODE[1],
    ),
    Tamper(
        name="sshd-dropin",
        node="rag-01",
        breaks=("test_sshd_config_root_only_and_whole",),
        apply="test ! -e /etc/ssh/sshd_config.d/tamper.conf"
        " && touch /etc/ssh/sshd_config.d/tamper.conf",
        revert="rm -f /etc/ssh/sshd_config.d/tamper.conf",
    ),
    # --- the node firewall -------------------------------------------------------------------
    Tamper(
        name="fw-extra-accept",
        node="inference-01",
        breaks=("test_node_firewall_rules_match_flows", "test_node_firewall_persisted_as_live"),
        apply="nft insert rule inet mlseclab_node input tcp dport 8099 accept comment tamper",
        revert=_DELETE_TAMPER_RULES.format(chain="inet mlseclab_node input"),
    ),
    Tamper(
        name="fw-output-policy-accept",
        node="gateway-01",
        breaks=("test_node_firewall_default_deny", "test_node_firewall_persisted_as_live"),
        apply="nft 'chain inet mlseclab_node output {{ policy accept; }}'",
        revert="nft 'chain inet mlseclab_node output {{ policy drop; }}'",
    ),
    Tamper(
        name="fw-drop-uncounted",
        node="obs-01",
        breaks=("test_node_firewall_default_deny",),
        apply="h=$(nft -a list chain inet mlseclab_node forward"
        " | sed -n 's/.*comment \"dropped\" # handle \\([0-9]*\\)$/\\1/p')"
        ' && nft replace rule inet mlseclab_node forward handle "$h" drop comment dropped',
        revert="h=$(nft -a list chain inet mlseclab_node forward"
        " | sed -n 's/.*comment \"dropped\" # handle \\([0-9]*\\)$/\\1/p')"
        ' && nft replace rule inet mlseclab_node forward handle "$h" counter drop comment dropped',
    ),
    Tamper(
        name="fw-saved-differs",
        node="rag-01",
        breaks=("test_node_firewall_persisted_as_live",),
        apply="cp -p /etc/nftables.conf /root/tamper-fw-saved-differs.bak && echo"
        " 'add rule inet mlseclab_node input tcp dport 8099 accept comment \"tamper\"'"
        " >> /etc/nftables.conf && nft -c -f /etc/nftables.conf",
        revert=_restore("fw-saved-differs", "/etc/nftables.conf"),
    ),
    # --- listening sockets ---------------------------------------------------------------------
    Tamper(
        name="rogue-listener",
        node="vectordb-01",
        breaks=("test_only_approved_sockets_listen",),
        apply="systemd-run --quiet --unit=tamper-listener /usr/bin/python3 -m http.server"
        " --bind {service} 8099 && sleep 2",
        revert="systemctl stop tamper-listener.service;"
        " systemctl reset-failed tamper-listener.service 2>/dev/null; true",
    ),
    Tamper(
        name="node-exporter-stopped",
        node="gateway-01",
        breaks=("test_every_approved_socket_listens",),
        apply="systemctl stop prometheus-node-exporter.service",
        revert="systemctl start prometheus-node-exporter.service && " + _wait_listening(9100),
    ),
    # -- Lynis gaps: pam_tmpdir, debsums, sysstat, hashing cost, /etc/issue, sshd penalties
    Tamper(
        name="pam-tmpdir-removed",
        node="rag-01",
        breaks=("test_sessions_get_a_private_tmpdir",),
        apply=_edit("pam-tmpdir-removed", "/etc/pam.d/common-session", "'/pam_tmpdir\\.so/d'"),
        revert=_restore("pam-tmpdir-removed", "/etc/pam.d/common-session"),
    ),
    Tamper(
        # /usr/share/openssh/sshd_config is ucf's template for upgrades, read by nothing else
        name="packaged-file-changed",
        node="gateway-01",
        breaks=("test_security_package_files_unchanged",),
        apply="cp -p /usr/share/openssh/sshd_config /root/tamper-packaged-file-changed.bak"
        " && printf '# tamper\\n' >> /usr/share/openssh/sshd_config",
        revert=_restore("packaged-file-changed", "/usr/share/openssh/sshd_config"),
    ),
    Tamper(
        name="sysstat-collection-off",
        node="obs-01",
        breaks=("test_sysstat_collects_activity",),
        apply="systemctl disable --now sysstat-collect.timer",
        revert="systemctl enable --now sysstat-collect.timer",
    ),
    Tamper(
        name="yescrypt-cost-lowered",
        node="vectordb-01",
        breaks=("test_password_hashing_cost",),
        apply=_edit(
            "yescrypt-cost-lowered",
            "/etc/login.defs",
            "-E 's/^YESCRYPT_COST_FACTOR[[:space:]]+[0-9]+$/YESCRYPT_COST_FACTOR 3/'",
        ),
        revert=_restore("yescrypt-cost-lowered", "/etc/login.defs"),
    ),
    Tamper(
        name="issue-names-the-os",
        node="inference-01",
        breaks=("test_local_login_banner",),
        apply="cp -p /etc/issue /root/tamper-issue-names-the-os.bak"
        " && printf '%s\\n' 'Debian GNU/Linux 13 \\n \\l' >> /etc/issue",
        revert=_restore("issue-names-the-os", "/etc/issue"),
    ),
    Tamper(
        name="sshd-penalties-off",
        node="vectordb-01",
        breaks=("test_sshd_penalises_brute_force",),
        apply=_PENALTIES[0],
        revert=_PENALTIES[1],
    ),
]
