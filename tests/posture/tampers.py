"""Tampers: how to break each posture check on purpose, and how to put it back.

Every posture check (a test function in tests/posture) must be named in the
``breaks`` of at least one tamper; tests/unit/test_posture.py
(``test_every_posture_check_has_a_tamper_that_breaks_it``) fails the suite when one
is not. tests/e2e runs every tamper on a hardened lab: apply it, run the checks it
names on that node and require each of them to FAIL, revert it, and finally require
a clean verify.

``apply``/``revert`` run as root on the node (``sudo sh -c``) through the lab's SSH
config; ``router_apply``/``router_revert`` run on the operator's host inside the
local lab's router namespace (for checks that two walls protect: the node's own
nftables and the router's). Commands are ``str.format``-ed with ``{mgmt}`` and
``{service}`` (the node's mgmt and first service address), ``{operator}`` (the
operator's address) and ``{table}`` (the router's nftables table); write literal
braces as ``{{`` ``}}``. A tamper must not cut the SSH connection the checks need,
and ``revert`` must restore the exact previous state (keep a copy in
/root/tamper-<name>.bak when a file is changed).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tamper:
    name: str  # short, unique, kebab-case: "sshd-password-auth"
    node: str  # a node of the reference lab (derived labs keep the names)
    breaks: tuple[str, ...]  # test function names that must fail while it is applied
    apply: str  # shell, as root on the node
    revert: str  # shell, as root on the node: back to exactly how it was
    router_apply: str = ""  # shell, as root in the lab's router netns on the host
    router_revert: str = ""


# Deletes every rule commented "tamper" from one chain (format with chain=...).
_DELETE_TAMPER_RULES = (
    "nft -a list chain {chain} | sed -n 's/.*comment \"tamper\" # handle \\([0-9]*\\)$/\\1/p'"
    " | while read h; do nft delete rule {chain} handle $h; done"
)

TAMPERS: list[Tamper] = [
    # Egress to the operator's host passes two walls (the node's output chain, the
    # router); a denied cell between two nodes passes three (the destination's input
    # chain too), so opening two never breaks the matrix from a node: the denied side
    # of the matrix is proven from the operator (whose traffic meets two walls), the
    # allowed side by a node that blocks its own allowed flow.
    Tamper(
        name="both-walls-open",
        node="rag-01",
        breaks=("test_no_egress_off_the_lab",),
        apply="nft insert rule inet mlseclab_node output accept comment tamper",
        revert=_DELETE_TAMPER_RULES.format(chain="inet mlseclab_node output"),
        router_apply="nft insert rule inet {table} forward accept comment tamper",
        router_revert=_DELETE_TAMPER_RULES.format(chain="inet {table} forward"),
    ),
    Tamper(
        name="allowed-flow-blocked",
        node="rag-01",
        breaks=("test_reachability_matrix_from_node",),
        apply="nft insert rule inet mlseclab_node output tcp dport 5432 drop comment tamper",
        revert=_DELETE_TAMPER_RULES.format(chain="inet mlseclab_node output"),
    ),
    Tamper(
        name="operator-reaches-inference",
        node="inference-01",
        breaks=("test_reachability_matrix_from_operator",),
        apply="nft insert rule inet mlseclab_node input accept comment tamper",
        revert=_DELETE_TAMPER_RULES.format(chain="inet mlseclab_node input"),
        router_apply="nft insert rule inet {table} forward accept comment tamper",
        router_revert=_DELETE_TAMPER_RULES.format(chain="inet {table} forward"),
    ),
]


def all_tampers() -> list[Tamper]:
    """This module's tampers and those of each check module's own table (tampers_*.py)."""
    import importlib
    from pathlib import Path

    found = list(TAMPERS)
    for path in sorted(Path(__file__).parent.glob("tampers_*.py")):
        module = importlib.import_module(f"posture.{path.stem}")
        found += list(module.TAMPERS)
    return found
