# ruff: noqa: E501  (a table of one-line variable descriptions; wrapping them hurts reading)
"""Write meta/argument_specs.yml of a role from its defaults and a table of descriptions.

Run from the repo root: .venv/bin/python tests/roles/gen_argument_specs.py ROLE
Keeps the contract and the defaults in step (types and defaults come from defaults/main.yml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "base": {
        "base_packages": "Debian packages the role configures, installed first (all in the local image).",
        "base_sysctl_enabled": "Manage sysctls (MLSL-OS-01, MLSL-OS-02).",
        "base_modules_enabled": "Make unused kernel modules not loadable on VMs (MLSL-OS-04).",
        "base_mounts_enabled": "Mount /tmp, /var/tmp, /dev/shm with nodev,nosuid,noexec on VMs (MLSL-OS-05).",
        "base_coredump_enabled": "Forbid core dumps (MLSL-OS-03).",
        "base_login_enabled": "Manage login.defs, useradd defaults, umask and shell timeout (MLSL-OS-06, MLSL-OS-07).",
        "base_pam_enabled": "Manage PAM faillock, pwquality, pwhistory (MLSL-OS-08, MLSL-OS-09).",
        "base_accounts_enabled": "System account shells and locks; uid/gid 0 check (MLSL-OS-10, MLSL-OS-11).",
        "base_permissions_enabled": "Account database and cron permissions; trust files (MLSL-OS-12..14).",
        "base_packages_enabled": "Remove insecure packages (MLSL-OS-23).",
        "base_audit_enabled": "Audit rules everywhere, auditd on VMs (MLSL-OS-15, MLSL-OS-16).",
        "base_aide_enabled": "AIDE configuration, database and check timer (MLSL-OS-17).",
        "base_journald_enabled": "Persistent journal and upload to the observability node (MLSL-OS-18, MLSL-OS-19).",
        "base_timesync_enabled": "systemd-timesyncd on VMs (MLSL-OS-20).",
        "base_upgrades_enabled": "Unattended security upgrades (MLSL-OS-21).",
        "base_apparmor_enabled": "AppArmor on VMs (MLSL-OS-22).",
        "base_accounting_enabled": "sysstat collection everywhere, process accounting on VMs (MLSL-OS-26, MLSL-OS-27).",
        "base_sysctl_ip_forward": "Set the forwarding sysctls to 1 (only for a node that routes).",
        "base_sysctl_net_extra": "Extra per-namespace sysctls (name: value), merged over the role's net set.",
        "base_sysctl_kernel_extra": "Extra kernel/fs sysctls (name: value), applied on VMs only.",
        "base_modules_disabled": "Kernel modules made not loadable (install /bin/false + blacklist).",
        "base_mounts": "Mount points with their tmpfs source and options (VMs).",
        "base_login_umask": "UMASK in login.defs and for login shells.",
        "base_login_encrypt_method": "ENCRYPT_METHOD in login.defs and the pam_unix hash.",
        "base_login_pass_max_days": "PASS_MAX_DAYS; also applied to accounts that have a password.",
        "base_login_pass_min_days": "PASS_MIN_DAYS; also applied to accounts that have a password.",
        "base_login_pass_warn_age": "PASS_WARN_AGE; also applied to accounts that have a password.",
        "base_login_inactive_days": "INACTIVE in /etc/default/useradd.",
        "base_login_shell_timeout": "TMOUT (seconds) for login shells.",
        "base_login_yescrypt_cost_factor": "YESCRYPT_COST_FACTOR in login.defs and pam_unix rounds (1-11).",
        "base_login_sha_crypt_rounds": "SHA_CRYPT_MIN_ROUNDS and SHA_CRYPT_MAX_ROUNDS in login.defs.",
        "base_login_issue_text": "The local login banner /etc/issue (MLSL-OS-28); no OS name or escapes.",
        "base_accounting_sysstat_units": "sysstat units enabled and started (MLSL-OS-26).",
        "base_pam_faillock_deny": "Failed attempts before pam_faillock locks an account.",
        "base_pam_faillock_unlock_time": "Seconds an account stays locked.",
        "base_pam_pwquality_minlen": "pwquality minlen.",
        "base_pam_pwquality_difok": "pwquality difok.",
        "base_pam_pwquality_minclass": "pwquality minclass.",
        "base_pam_pwquality_maxrepeat": "pwquality maxrepeat.",
        "base_pam_pwquality_maxsequence": "pwquality maxsequence.",
        "base_pam_pwhistory_remember": "pam_pwhistory remember.",
        "base_accounts_shell_exempt": "System accounts that keep their login shell.",
        "base_audit_max_log_file": "auditd max_log_file (MiB).",
        "base_audit_space_left_action": "auditd space_left_action.",
        "base_audit_admin_space_left_action": "auditd admin_space_left_action.",
        "base_audit_disk_full_action": "auditd disk_full_action.",
        "base_audit_disk_error_action": "auditd disk_error_action.",
        "base_audit_backlog_limit": "audit_backlog_limit on the kernel command line (VMs with GRUB).",
        "base_audit_privileged_paths": "Directories searched for setuid/setgid programs to audit.",
        "base_aide_paths": "Trees AIDE records (kept small so the first database build is bounded).",
        "base_aide_init_timeout": "Seconds the first AIDE database build may take.",
        "base_aide_check_calendar": "systemd OnCalendar of the AIDE check.",
        "base_journald_system_max_use": "journald SystemMaxUse.",
        "base_journald_max_retention": "journald MaxRetentionSec.",
        "base_journal_upload_scheme": "http or https (https uses the lab CA and the node certificate).",
        "base_journal_upload_port": "Port of systemd-journal-remote on the observability node.",
        "base_journal_upload_group": "Inventory group whose first host receives the journals.",
        "base_timesync_servers": "NTP servers for systemd-timesyncd (VMs).",
        "base_upgrades_automatic_reboot": "Let unattended-upgrades reboot the node.",
        "base_packages_absent": "Packages that must not be installed.",
    },
    "ssh": {
        "ssh_packages": "Debian packages the role configures, installed first (in the local image).",
        "ssh_access_enabled": "Create the SSH group and put the operator in it (MLSL-SSH-01).",
        "ssh_config_enabled": "Write sshd_config and empty sshd_config.d (MLSL-SSH-02..09).",
        "ssh_service_enabled": "ssh.service enabled after network-online, ssh.socket masked (MLSL-SSH-10).",
        "ssh_hostkeys_enabled": "Host key permissions (MLSL-SSH-11).",
        "ssh_operator_user": "The automation's login user (sudo); always in ssh_allow_group.",
        "ssh_allow_group": "The only group allowed to log in (AllowGroups).",
        "ssh_allow_users_extra": "Further users put in ssh_allow_group.",
        "ssh_listen_addresses": "ListenAddress values; must include mlseclab_mgmt_ip.",
        "ssh_port": "Port sshd listens on.",
        "ssh_max_auth_tries": "MaxAuthTries.",
        "ssh_max_sessions": "MaxSessions.",
        "ssh_max_startups": "MaxStartups (start:rate:full).",
        "ssh_login_grace_time": "LoginGraceTime (seconds).",
        "ssh_client_alive_interval": "ClientAliveInterval (seconds).",
        "ssh_client_alive_count_max": "ClientAliveCountMax.",
        "ssh_per_source_penalties": "PerSourcePenalties (MLSL-SSH-12); empty leaves it out.",
        "ssh_per_source_max_startups": "PerSourceMaxStartups (MLSL-SSH-12); empty leaves it out.",
        "ssh_log_level": "LogLevel.",
        "ssh_permit_root_login": "PermitRootLogin: no, or prohibit-password on Proxmox hypervisors (key-only root for the cluster).",
        "ssh_streamlocal_forwarding_users": "Users allowed unix-socket forwarding to the host (Match block); [root] on Proxmox for migration tunnels.",
        "ssh_banner_enabled": "Show /etc/issue.net before authentication.",
        "ssh_banner_text": "Text of /etc/issue.net.",
        "ssh_kex_algorithms": "KexAlgorithms allowlist.",
        "ssh_ciphers": "Ciphers allowlist.",
        "ssh_macs": "MACs allowlist.",
        "ssh_host_key_algorithms": "HostKeyAlgorithms allowlist.",
        "ssh_host_key_types": "Host key types sshd loads (ssh_host_<type>_key); the lab pins ed25519.",
    },
    "firewall": {
        "firewall_packages": "Debian packages the role configures, installed first (in the local image).",
        "firewall_ruleset_enabled": "Write and load the node's nftables table (MLSL-FW-01..05).",
        "firewall_service_enabled": "nftables.service enabled and started (MLSL-FW-06).",
        "firewall_table": "Name of the inet table the role owns.",
        "firewall_ingress": "Ingress flows {flow, proto, port, sources, destinations}; default mlseclab_ingress.",
        "firewall_egress": "Egress flows, same shape; default mlseclab_egress.",
        "firewall_ingress_extra": "Extra ingress rules, same shape as a flow.",
        "firewall_egress_extra": "Extra egress rules, same shape as a flow.",
        "firewall_forward_policy": "Policy of the forward chain.",
        "firewall_require_operator_ssh": "Fail before writing a ruleset without SSH from the operator.",
        "firewall_ssh_port": "The SSH port the lock-out guard looks for.",
    },
}
CHOICES = {
    "firewall_forward_policy": ["drop", "accept"],
    "ssh_log_level": ["INFO", "VERBOSE"],
    "ssh_permit_root_login": ["no", "prohibit-password"],
    "base_journal_upload_scheme": ["http", "https"],
    "base_login_encrypt_method": ["YESCRYPT", "SHA512"],
}
INVENTORY = {
    "base": {
        "mlseclab_kind": (
            "str",
            "container or vm, from the mlseclab inventory",
            ["container", "vm"],
        ),
        "mlseclab_mgmt_ip": (
            "str",
            "the node's management address, from the mlseclab inventory",
            None,
        ),
        "mlseclab_secrets_dir": (
            "path",
            "the lab's secrets directory on the controller (https upload)",
            None,
        ),
    },
    "ssh": {
        "mlseclab_mgmt_ip": (
            "str",
            "the node's management address, from the mlseclab inventory",
            None,
        ),
    },
    "firewall": {
        "mlseclab_ingress": (
            "list",
            "ingress flows of this node, from the mlseclab inventory",
            None,
        ),
        "mlseclab_egress": ("list", "egress flows of this node, from the mlseclab inventory", None),
        "mlseclab_operator_address": (
            "str",
            "the operator's address, from the mlseclab inventory",
            None,
        ),
    },
}
TYPE_OVERRIDES = {"firewall_ingress": "list", "firewall_egress": "list"}
TYPES = {bool: "bool", int: "int", str: "str", list: "list", dict: "dict"}


def spec(role: str) -> dict[str, object]:
    root = Path("roles") / role
    defaults = yaml.safe_load((root / "defaults/main.yml").read_text()) or {}
    options: dict[str, object] = {}
    for name, value in defaults.items():
        opt: dict[str, object] = {
            "type": TYPE_OVERRIDES.get(name, TYPES[type(value)]),
            "default": value,
            "description": DESCRIPTIONS[role][name],
        }
        if name in TYPE_OVERRIDES:
            opt["elements"] = "dict"
        elif isinstance(value, list):
            opt["elements"] = "dict" if value and isinstance(value[0], dict) else "str"
        if name in CHOICES:
            opt["choices"] = CHOICES[name]
        options[name] = opt
    for name, (typ, desc, choices) in INVENTORY.get(role, {}).items():
        opt = {"type": typ, "required": True, "description": desc}
        if typ == "list":
            opt["elements"] = "dict"
        if choices:
            opt["choices"] = choices
        options[name] = opt
    return {
        "argument_specs": {
            "main": {"short_description": f"mlseclab {role} role", "options": options}
        }
    }


if __name__ == "__main__":
    role = sys.argv[1]
    out = Path("roles") / role / "meta/argument_specs.yml"
    header = "# The contract of every variable (generated by tests/roles/gen_argument_specs.py from defaults).\n"
    out.write_text(header + yaml.safe_dump(spec(role), sort_keys=False, width=110))
    print(out)
