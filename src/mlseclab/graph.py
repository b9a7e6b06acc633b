"""The topology picture: segments as clusters, nodes inside, flows as edges."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

from mlseclab.errors import PreflightError
from mlseclab.spec import ALL, ANY, OPERATOR
from mlseclab.topology import Topology

_PURPOSE_COLOUR = {
    "mgmt": "#e8e8e8",
    "edge": "#fde2c8",
    "inference": "#e3d7f5",
    "data": "#d4ecd9",
    "app": "#d6e6f7",
    "obs": "#f6f0c4",
}


def _q(text: str) -> str:
    """A quoted DOT string; a newline becomes DOT's centred line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def to_dot(topo: Topology) -> str:
    """Graphviz source for the lab: one cluster per segment, one record per node NIC."""
    spec = topo.spec
    lines = [
        f"digraph {_q(spec.lab.name)} {{",
        "  graph [rankdir=LR, fontname=Helvetica, fontsize=11, compound=true, newrank=true,"
        f" label={_q(f'mlseclab lab {spec.lab.name}: segments, nodes and allowed flows')},"
        " labelloc=t];",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica,'
        " fontsize=10];",
        "  edge [fontname=Helvetica, fontsize=9];",
        f'  {_q(OPERATOR)} [shape=oval, fillcolor="#ffffff", label="operator\\n'
        f'{topo.operator_address}"];',
        f'  {_q(ANY)} [shape=oval, style=dashed, label="clients (any)"];',
    ]
    for seg_name, seg in spec.networks.items():
        lines.append(f"  subgraph {_q('cluster_' + seg_name)} {{")
        lines.append(f"    label={_q(f'{seg_name} · VLAN {seg.vlan} · {seg.cidr}')};")
        lines.append(
            f"    style=filled; fillcolor={_q(_PURPOSE_COLOUR.get(seg.purpose.value, '#eee'))};"
        )
        for node in topo.nodes.values():
            iface = node.interface_on(seg_name)
            if iface is None:
                continue
            lines.append(
                f"    {_q(f'{node.name}@{seg_name}')} "
                f"[label={_q(f'{node.name} ({node.role})' + chr(10) + iface.ip)}];"
            )
        lines.append("  }")
    # a node's NICs belong together: an invisible chain keeps them in one column
    for node in topo.nodes.values():
        ids = [f"{node.name}@{i.network}" for i in node.interfaces]
        for a, b in itertools.pairwise(ids):
            lines.append(f'  {_q(a)} -> {_q(b)} [style=dotted, arrowhead=none, color="#999999"];')
    seen: set[tuple[str, str, str]] = set()
    for rule in topo.rules:
        dst_iface = next(
            i for i in topo.nodes[rule.destination].interfaces if i.ip in rule.destination_addresses
        )
        dst_id = f"{rule.destination}@{dst_iface.network}"
        if rule.any_source:
            sources = [ANY]
        else:
            sources = []
            for s in rule.sources:
                if s == OPERATOR:
                    sources.append(OPERATOR)
                else:
                    src = topo.nodes[s]
                    via = src.interface_on(dst_iface.network) or (src.service or (src.mgmt,))[0]
                    sources.append(f"{s}@{via.network}")
        label = f"{rule.proto}/{rule.port}"
        for src_id in sources:
            key = (src_id, dst_id, label)
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"  {_q(src_id)} -> {_q(dst_id)} [label={_q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(topo: Topology, out_dir: Path, formats: tuple[str, ...] = ("svg", "png")) -> list[Path]:
    """Write ``<lab>.dot`` and the picture in each format; needs graphviz's ``dot``."""
    dot = shutil.which("dot")
    if dot is None:
        raise PreflightError(
            "graphviz's `dot` is missing; install it with `apt-get install graphviz`"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / f"{topo.spec.lab.name}.dot"
    source.write_text(to_dot(topo), encoding="utf-8")
    written = [source]
    for fmt in formats:
        target = out_dir / f"{topo.spec.lab.name}.{fmt}"
        subprocess.run(
            [dot, f"-T{fmt}", "-o", str(target), str(source)], check=True, stdin=subprocess.DEVNULL
        )
        written.append(target)
    return written


__all__ = ["ALL", "render", "to_dot"]
