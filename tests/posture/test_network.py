"""The reachability matrix, walked from inside every node and from the operator's host.

Nothing here is hand-listed: every cell comes from the spec through
``Topology.matrix``. These checks prove the two firewalls (the node's and the
router's), not the services: an allowed flow must reach the destination host
(it connects, or the host refuses it because nothing listens there: which
sockets listen is checked per role in test_sockets.py). A denied one must
neither connect nor be refused: a refusal (TCP reset) means the packet reached
the destination host, so a firewall let it through.
"""

from __future__ import annotations

import concurrent.futures
import errno
import shlex
import socket
from typing import Any

import pytest

from mlseclab.posture.plugin import PostureLab, PostureNode, not_applicable
from mlseclab.spec import OPERATOR

PROBE_TIMEOUT = 2  # seconds a denied probe waits before it counts as dropped
OFF_LAB = ("192.0.2.1", 443)  # TEST-NET-1: outside every lab network, never routed off the host


def _probe_script(targets: list[tuple[str, int]]) -> str:
    """One shell run that probes every target at once; prints `ADDRESS PORT RESULT` lines."""
    lines = [
        "probe() {",
        f'  out=$(timeout {PROBE_TIMEOUT} bash -c "exec 3<>/dev/tcp/$1/$2" 2>&1); rc=$?',
        "  if [ $rc -eq 0 ]; then r=open; elif [ $rc -eq 124 ]; then r=timeout;",
        '  elif printf %s "$out" | grep -qi refused; then r=refused; else r=unreachable; fi',
        '  echo "$1 $2 $r"',
        "}",
    ]
    lines += [f"probe {shlex.quote(a)} {p} &" for a, p in targets]
    lines.append("wait")
    return "\n".join(lines)


def _run_probes(host: Any, targets: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    # sudo -u nobody: the probe runs unprivileged, like a compromised service would
    cmd = host.run("sudo -u nobody bash -c %s", _probe_script(targets))
    found: dict[tuple[str, int], str] = {}
    for line in cmd.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            found[(parts[0], int(parts[1]))] = parts[2]
    missing = [t for t in targets if t not in found]
    assert not missing, f"probes did not report: {missing}; stderr: {cmd.stderr[-500:]}"
    return found


def _judge(cells: list[Any], results: dict[tuple[str, int], str]) -> list[str]:
    wrong = []
    for c in cells:
        got = results[(c.address, c.port)]
        if c.allowed and got not in ("open", "refused"):
            wrong.append(
                f"allowed {c.proto}/{c.port} to {c.destination} {c.address} "
                f"(flow {c.flow}) did not reach the host: {got}"
            )
        elif not c.allowed and got in ("open", "refused"):
            wrong.append(
                f"denied {c.proto}/{c.port} to {c.destination} {c.address} ({c.network}) "
                f"got through: {got}"
            )
    return wrong


@pytest.mark.control("MLSL-NET-01", cis="4.3.3, 4.3.4", owasp="LLM10", atlas="AML.T0049")
def test_reachability_matrix_from_node(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Every allowed flow from this node connects; every denied (node, port) does not."""
    cells = [c for c in lab.topology.matrix if c.source == node.name]
    udp = [c for c in cells if c.proto != "tcp"]
    cells = [c for c in cells if c.proto == "tcp"]
    if not cells:
        not_applicable(f"no TCP cells from {node.name} ({len(udp)} UDP cells cannot be probed)")
    results = _run_probes(host, sorted({(c.address, c.port) for c in cells}))
    wrong = _judge(cells, results)
    allowed = sum(c.allowed for c in cells)
    head = f"{len(wrong)} of {len(cells)} cells wrong ({allowed} allowed):\n"
    assert not wrong, head + "\n".join(wrong)


@pytest.mark.control("MLSL-NET-02", cis="4.3.3", owasp="LLM03", atlas="AML.T0025, AML.T0072")
def test_no_egress_off_the_lab(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Nothing leaves the lab: neither the operator's host nor an outside address is reachable."""
    targets = [(lab.topology.operator_address, 22), OFF_LAB]
    results = _run_probes(host, targets)
    through = {f"{a}:{p}": r for (a, p), r in results.items() if r in ("open", "refused")}
    assert not through, f"egress from {node.name} off the lab got through: {through}"


def _connect(address: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(PROBE_TIMEOUT)
        try:
            s.connect((address, port))
        except TimeoutError:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            unreachable = exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
            return "unreachable" if unreachable else str(exc)
        return "open"


@pytest.mark.control("MLSL-NET-03", cis="4.3.3", owasp="LLM10", atlas="AML.T0040")
def test_reachability_matrix_from_operator(lab: PostureLab) -> None:
    """From the operator's host: SSH to every mgmt address and the gateway's edge, nothing else."""
    cells = [c for c in lab.topology.matrix if c.source == OPERATOR and c.proto == "tcp"]
    targets = sorted({(c.address, c.port) for c in cells})
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = dict(zip(targets, pool.map(lambda t: _connect(*t), targets), strict=True))
    wrong = _judge(cells, results)
    assert not wrong, f"{len(wrong)} of {len(cells)} cells wrong:\n" + "\n".join(wrong)
