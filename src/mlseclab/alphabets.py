"""What a string from the lab spec may contain, decided by where it is rendered.

Every string that leaves the spec lands in another language: nftables rulesets
and their comments, the Ansible inventory (Jinja), ssh_config, /etc/hosts and
resolv.conf, nginx's ``server_name``, systemd unit names, Proxmox ACL paths and
API ids, certificates. Two kinds of string are allowed, and nothing else:

- **Identifiers** (names, the domain, Proxmox ids, tags, flow names) are limited
  to an alphabet that is inert in every one of those languages: no quote,
  backslash, space, ``;``, ``$``, backtick, brace, ``/`` or ``:`` (which separate
  paths and bind mounts), no newline, nothing outside ASCII.
- **Free text** (descriptions, a waiver's reason) is one line of printable text
  with no control or format characters and no Jinja delimiters. It is never put
  into a ruleset, a path or a command; where it is rendered (the inventory, a
  report page, the terminal) it is also quoted for that language.

The validators raise ``ValueError`` with a message that says what would be valid;
pydantic turns that into the spec's ``FILE:LINE: path: message`` lines.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

#: A DNS label: lowercase letters, digits and '-', starting with a letter.
DNS_LABEL = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
#: A DNS name made of such labels (labels may start with a digit after the first).
_DNS_NAME_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DNS_NAME_MAX = 253

#: Flow names become nftables and Proxmox firewall comments: an nft comment holds 128
#: bytes and the router's reads "<flow> -> <node>", so a flow's label keeps to 60.
FLOW_LABEL_MAX = 60
FLOW_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,58}[A-Za-z0-9])?")
#: What a flow's label (its name, or "<from>-><to>:<port>/<proto>") may hold inside a
#: double-quoted nftables comment. The firewall role asserts the same alphabet
#: (roles/firewall/vars/main.yml, ``firewall_comment_pattern``).
NFT_COMMENT = re.compile(r"[A-Za-z0-9._:/>-]{1,60}")

#: A model's name: the model server's alias and the name clients ask for.
MODEL_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")

#: Proxmox ids, each the alphabet Proxmox itself accepts, or a subset of it.
PVE_NODE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # pve-node
PVE_STORAGE = re.compile(r"[a-z][a-z0-9._-]{0,62}[a-z0-9]")  # pve-storage-id
PVE_BRIDGE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,14}")  # a Linux interface name, no '.'
#: pve-sdn-zone-id is [a-zA-Z][a-zA-Z0-9]*[a-zA-Z0-9], at most 8. mlseclab allows 4: its vnet
#: ids (at most 8, cluster-global) are the zone id plus the 4-digit VLAN id.
PVE_SDN_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,2}[A-Za-z0-9]")
PVE_POOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # pve-poolid, no '/'
PVE_TAG = re.compile(r"[a-z0-9_][a-z0-9_+.-]{0,63}")  # pve-tag, lowercase
PVE_MAPPING = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")  # a resource mapping id
#: https://HOST[:PORT]/ where HOST is a DNS name or an IPv4 address.
ENDPOINT = re.compile(r"https://(?P<host>[A-Za-z0-9.-]{1,253})(:(?P<port>[0-9]{1,5}))?/?")

FREE_TEXT_MAX = 200
_TEMPLATE_DELIMITERS = ("{{", "{%", "{#", "}}", "%}", "#}")


def shown(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return repr(shown)  # a newline, control or format character is shown escaped


def matcher(pattern: re.Pattern[str], what: str, valid: str, example: str) -> Callable[[str], str]:
    """A validator: ``value`` must match ``pattern`` in full."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{shown(value)} is not {what}; use {valid}, e.g. {example}")
        return value

    return check


def dns_name(value: str) -> str:
    """A DNS name: dot-separated labels of lowercase letters, digits and '-'."""
    labels = value.split(".")
    if (
        len(value) > DNS_NAME_MAX
        or not DNS_LABEL.fullmatch(labels[0])
        or not all(_DNS_NAME_LABEL.fullmatch(label) for label in labels[1:])
    ):
        raise ValueError(
            f"{shown(value)} is not a DNS domain; use labels of lowercase letters, digits "
            "and '-' joined by dots (at most 253 characters), e.g. lab.internal"
        )
    return value


def free_text(value: str, limit: int = FREE_TEXT_MAX) -> str:
    """One line of printable text: no control or format characters, no Jinja delimiters."""
    for ch in value:
        category = unicodedata.category(ch)
        if category[0] == "C" or category in ("Zl", "Zp"):
            raise ValueError(
                f"contains the control or format character U+{ord(ch):04X}; write one line of "
                f"printable text (up to {limit} characters)"
            )
    for delimiter in _TEMPLATE_DELIMITERS:
        if delimiter in value:
            raise ValueError(
                f"contains {delimiter!r}, which is template syntax; write plain text without "
                "'{{', '{%' or '{#' and their closing pairs"
            )
    if len(value) > limit:
        raise ValueError(f"is {len(value)} characters long; write at most {limit}")
    return value
