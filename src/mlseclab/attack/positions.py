"""Where the attacker stands, and how a probe is run from there.

- :class:`EdgeClient`: a client on the edge segment, as anyone the gateway
  serves would be. On the local target it is a network namespace of its own
  with one veth into the segment's bridge (an isolated port, like every node's),
  an unused address of the segment and a default route to the router, so
  everything it sends crosses the router's forward chain. It exists only while
  the attack runs and is removed also when the attack fails.
- :class:`CompromisedService`: code execution inside a node's service, with the
  service's own user and the credentials systemd hands that service, and no
  more (the attacker has not also become root). The probe runs through
  ``systemd-run`` as that user with the unit's own ``LoadCredential=`` list.

A probe is :mod:`mlseclab.attack.probe` with its job appended as a literal, sent
on standard input: the job may carry an API key, which must never be in argv.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
import sys
from importlib import resources
from typing import Any

from mlseclab.errors import LabError
from mlseclab.process import run, ssh
from mlseclab.targets.local import network
from mlseclab.targets.local.names import PREFIX, LocalNames, _short
from mlseclab.topology import Topology

PROBE_TIMEOUT = 300


def probe_program(job: dict[str, Any]) -> str:
    source = resources.files("mlseclab.attack").joinpath("probe.py").read_text(encoding="utf-8")
    return f"{source}\nprint(json.dumps(main(json.loads({json.dumps(json.dumps(job))}))))\n"


def _parse(where: str, done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabError(f"the probe on {where} failed (exit {done.returncode}): {tail}")
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise LabError(f"the probe on {where} printed no JSON: {done.stdout[-200:]!r}") from None
    return result


class EdgeClient:
    """A client namespace on the segment where the gateway serves (local target)."""

    def __init__(self, topo: Topology, names: LocalNames) -> None:
        self.topo, self.names = topo, names
        self.netns = f"{PREFIX}-{names.lab}-client"
        self.port = f"c{_short(names.lab, 'client')}"
        gateways = [n for n in topo.nodes.values() if n.role == "gateway" and n.service]
        if not gateways:
            raise LabError(f"lab {topo.spec.lab.name} has no gateway with a service network")
        iface = gateways[0].service[0]
        self.segment = iface.network
        seg = topo.spec.networks[self.segment]
        used = {i.ip for n in topo.nodes.values() for i in n.interfaces} | {
            str(seg.gateway_address)
        }
        free = [str(h) for h in reversed(list(seg.network.hosts())) if str(h) not in used]
        if not free:
            raise LabError(f"segment {self.segment} has no free address for the edge client")
        self.address = free[0]
        self.prefix = seg.network.prefixlen
        self.gateway_address = str(seg.gateway_address)

    def __enter__(self) -> EdgeClient:
        self.close()  # what an interrupted attack left
        rns = self.names.router_ns
        if not network.netns_exists(rns):
            raise LabError(f"the lab's router namespace {rns} is missing: run `mlseclab up`")
        try:
            run(["ip", "netns", "add", self.netns])
            run(
                [
                    "ip",
                    "-n",
                    rns,
                    "link",
                    "add",
                    "name",
                    self.port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    self.netns,
                ]
            )
            run(
                [
                    "ip",
                    "-n",
                    rns,
                    "link",
                    "set",
                    self.port,
                    "master",
                    self.names.bridge(self.segment),
                ]
            )
            run(["bridge", "-n", rns, "link", "set", "dev", self.port, "isolated", "on"])
            run(["ip", "-n", rns, "link", "set", self.port, "up"])
            run(
                [
                    "ip",
                    "-n",
                    self.netns,
                    "addr",
                    "add",
                    f"{self.address}/{self.prefix}",
                    "dev",
                    "eth0",
                ]
            )
            run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
            run(["ip", "-n", self.netns, "link", "set", "eth0", "up"])
            run(["ip", "-n", self.netns, "route", "add", "default", "via", self.gateway_address])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        network.delete_link(self.port, self.names.router_ns) if network.netns_exists(
            self.names.router_ns
        ) else None
        network.delete_netns(self.netns)
        network.forget_neighbours(self.names, [self.address])

    def probe(self, job: dict[str, Any]) -> dict[str, Any]:
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-I", "-"],
            input=probe_program(job),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
        return _parse(f"the edge client {self.address}", done)


class CompromisedService:
    """Code execution as ``unit``'s user on ``node``, holding what systemd gives that unit."""

    def __init__(self, ssh_config: str, node: str, unit: str) -> None:
        self.ssh_config, self.node, self.unit = ssh_config, node, unit
        self._properties: list[str] | None = None

    def ssh(
        self, command: str, stdin: str | None = None, timeout: float = PROBE_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return ssh(self.ssh_config, self.node, command, stdin=stdin, timeout=timeout)

    def properties(self) -> list[str]:
        """Options for systemd-run: the unit's User= and every LoadCredential= (read from
        the unit file and its drop-ins, as systemd would apply them)."""
        if self._properties is None:
            shown = self.ssh(f"sudo -n systemctl cat {shlex.quote(self.unit)} --no-pager")
            if shown.returncode != 0:
                raise LabError(f"{self.node}: cannot read {self.unit}: {shown.stderr.strip()}")
            user, creds = "nobody", []
            for line in shown.stdout.splitlines():
                key, _, value = line.strip().partition("=")
                if key == "User" and value:
                    user = value
                elif key == "LoadCredential" and ":" in value:
                    creds.append(value)
            self._properties = [f"--uid={user}", f"--gid={user}"] + [
                f"--property=LoadCredential={c}" for c in dict.fromkeys(creds)
            ]
        return self._properties

    def credential_names(self) -> list[str]:
        return [p.split("=", 2)[2].split(":", 1)[0] for p in self.properties() if "Cred" in p]

    def probe(self, job: dict[str, Any]) -> dict[str, Any]:
        props = " ".join(shlex.quote(p) for p in self.properties())
        command = (
            f"sudo -n systemd-run --quiet --wait --pipe --collect {props} "
            "-p ProtectSystem=strict -p PrivateTmp=yes /usr/bin/python3 -I -"
        )
        return _parse(f"{self.node} (as {self.unit})", self.ssh(command, probe_program(job)))


def lab_addresses(topo: Topology) -> list[tuple[str, str]]:
    """Every (node, address) of the lab, and the router's address on each segment."""
    out = [(n.name, i.ip) for n in topo.nodes.values() for i in n.interfaces]
    out += [("router", str(seg.gateway_address)) for seg in topo.spec.networks.values()]
    return sorted(out, key=lambda t: ipaddress.IPv4Address(t[1]))
