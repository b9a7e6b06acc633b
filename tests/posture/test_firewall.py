"""The node's own nftables firewall (roles/firewall, MLSL-FW-*), the wall behind the router.

The expected ruleset is derived here from the spec, the same way the inventory
is (``Topology.ingress``/``egress``: each flow resolved to addresses), and the
live one is read with ``nft -j list ruleset``. The persisted ruleset is
loaded from /etc/nftables.conf into a scratch network namespace (``unshare
-n``), so what the node would run after a reboot is compared rule by rule too.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from mlseclab.posture.plugin import PostureLab, PostureNode
from mlseclab.topology import Rule
from posture.nodeinfo import (
    NftChain,
    gather,
    nft_ruleset,
    ok,
    parse_stats,
    set_text,
    stat_command,
    too_open,
)

TABLE = "inet mlseclab_node"  # roles/firewall firewall_table
CONFIG = "/etc/nftables.conf"
HOOKS = ("input", "output", "forward")
DROPPED = 'counter drop comment "dropped"'
PROLOGUE = {
    "input": ["meta iif {lo} accept", "ct state {established,related} accept"],
    "output": ["meta oif {lo} accept", "ct state {established,related} accept"],
}
INVALID = 'ct state {invalid} counter drop comment "invalid"'
PROBE_UID = 65534  # roles/firewall firewall_probe_uid: the posture suite's network probes
# the probes' dropped egress, counted apart so that the egress alert leaves them out
PROBE_DROPS = f'meta skuid {{{PROBE_UID}}} counter drop comment "dropped: posture probe"'
EPILOGUE = {"output": [PROBE_DROPS]}
OTHER_FIREWALLS = ("ufw", "firewalld", "iptables-persistent")


def _flow_rule(rule: Rule, sources: tuple[str, ...]) -> str:
    terms = [f"ip saddr {set_text(sources)}"] if sources else []
    terms += [
        f"ip daddr {set_text(rule.destination_addresses)}",
        f"{rule.proto} dport {{{rule.port}}}",
        "ct state {new}",
        "counter",
        "accept",
    ]
    return " ".join(terms) + f' comment "{rule.flow}"'


def expected_flow_rules(lab: PostureLab, node: PostureNode) -> dict[str, list[str]]:
    """The allow rules of each chain from the spec's flows (egress sources: this node's own)."""
    own = set(node.topo.addresses)
    ingress = [_flow_rule(r, r.source_addresses) for r in lab.topology.ingress(node.name)]
    egress = [
        _flow_rule(r, tuple(a for a in r.source_addresses if a in own))
        for r in lab.topology.egress(node.name)
    ]
    return {"input": ingress, "output": egress, "forward": []}


def _diff_chain(chain: NftChain | None, name: str, flows: list[str]) -> list[str]:
    if chain is None:
        return [f"chain {name} is missing"]
    rules = list(chain.rules)
    wrong = []
    head = PROLOGUE.get(name, [])
    if name in PROLOGUE:
        head = [*head, INVALID]
    if rules[: len(head)] != head:
        wrong.append(f"{name}: starts with {rules[: len(head)]} (expected {head})")
    body = rules[len(head) : -1] if rules and rules[-1] == DROPPED else rules[len(head) :]
    tail = EPILOGUE.get(name, [])
    if tail:
        if body[-len(tail) :] != tail:
            wrong.append(f"{name}: does not end with {tail} before the final drop")
        else:
            body = body[: -len(tail)]
    have, want = Counter(body), Counter(flows)
    wrong += [f"{name}: unexpected rule: {r}" for r in sorted((have - want).elements())]
    wrong += [f"{name}: missing rule: {r}" for r in sorted((want - have).elements())]
    return wrong


def _live(
    host: Any, **extra: str
) -> tuple[list[str], dict[tuple[str, str], NftChain], dict[str, Any]]:
    out = gather(host, live="nft -j list ruleset", **extra)
    tables, chains = nft_ruleset(ok(out["live"], "nft -j list ruleset"))
    return tables, chains, out


@pytest.mark.control("MLSL-FW-01", "MLSL-FW-03", "MLSL-FW-04", cis="4.1.3, 4.1.4, 4.1.5")
def test_node_firewall_default_deny(node: PostureNode, host: Any) -> None:
    """nftables alone filters: input, output and forward drop by default and count drops."""
    names = " ".join(OTHER_FIREWALLS)
    tables, chains, out = _live(
        host,
        others=f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {names} 2>/dev/null"
        "; true",
    )
    wrong = []
    if tables != [TABLE]:
        wrong.append(f"tables {tables} (expected only {TABLE}: nothing else may filter or rewrite)")
    for hook in HOOKS:
        chain = chains.get((TABLE, hook))
        if chain is None or chain.hook != hook:
            wrong.append(f"no {hook} base chain in {TABLE}")
            continue
        if chain.policy != "drop":
            wrong.append(f"{hook} policy {chain.policy} (expected drop)")
        if not chain.rules or chain.rules[-1] != DROPPED:
            wrong.append(
                f"{hook} does not end with '{DROPPED}' (last: {chain.rules[-1:] or 'no rules'})"
            )
        uncounted = [r for r in chain.rules if " drop" in f" {r}" and "counter" not in r.split()]
        if uncounted:
            wrong.append(f"{hook} drops without counting: {uncounted}")
    installed = [line.split()[0] for line in out["others"].lines if " ii" in line]
    if installed:
        wrong.append(f"other firewall tools installed: {installed}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control(
    "MLSL-FW-02", "MLSL-FW-03", cis="4.1.3, 4.1.4", owasp="LLM10", atlas="AML.T0049, AML.T0025"
)
def test_node_firewall_rules_match_flows(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The live allow-list is exactly this node's flows from the spec, in and out, each counted."""
    _, chains, _ = _live(host)
    flows = expected_flow_rules(lab, node)
    wrong = []
    for name in HOOKS:
        wrong += _diff_chain(chains.get((TABLE, name)), name, flows[name])
    assert not wrong, f"{node.name}: {len(wrong)} differences from the flows: " + "; ".join(wrong)


@pytest.mark.control("MLSL-FW-06", cis="4.1.2")
def test_node_firewall_persisted_as_live(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """/etc/nftables.conf (0600 root) loads at boot and holds the same ruleset as the live one."""
    _, live, out = _live(
        host,
        saved=f"unshare -n sh -c 'nft -f {CONFIG} && nft -j list ruleset'",
        unit="systemctl show nftables.service -p UnitFileState -p ExecStart",
        perms=stat_command([CONFIG]),
    )
    wrong = []
    unit = dict(line.split("=", 1) for line in out["unit"].lines if "=" in line)
    if unit.get("UnitFileState") != "enabled":
        wrong.append(f"nftables.service is {unit.get('UnitFileState')} (expected enabled)")
    if CONFIG not in unit.get("ExecStart", ""):
        wrong.append(f"nftables.service does not load {CONFIG}")
    st = parse_stats(out["perms"].text).get(CONFIG)
    if st is None or too_open(st.mode, 0o600) or st.owner != "root":
        wrong.append(f"{st or CONFIG + ' missing'} (expected at most 0600 root)")
    if out["saved"].rc != 0:
        wrong.append(f"{CONFIG} does not load: {out['saved'].text.strip()[-300:]}")
    else:
        _, saved = nft_ruleset(out["saved"].text)
        flows = expected_flow_rules(lab, node)
        for name in HOOKS:
            a, b = saved.get((TABLE, name)), live.get((TABLE, name))
            if a is None or b is None or (a.policy, a.rules) != (b.policy, b.rules):
                wrong.append(f"{name}: {CONFIG} differs from the live chain")
                wrong += [f"{CONFIG} {d}" for d in _diff_chain(a, name, flows[name])]
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
