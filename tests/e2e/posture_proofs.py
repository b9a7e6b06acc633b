"""Posture, drift and tamper proofs on the hardened lab of test_hardened_lab.py.

Imported at the end of that module so that they share its lab (hardening one
takes minutes) and run after its own tests. They need only the fixture ``lab``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

from helpers.tampering import TamperProof, on_node, prove
from mlseclab.posture.plugin import LAB_SCOPE
from posture.tampers import Tamper, all_tampers


def _latest_report(reports: Path, kind: str = "") -> dict[str, Any]:
    """The newest report.json of a verify run (kind "") or of a drift run (kind "drift")."""
    found = sorted(
        (
            p
            for p in reports.glob("*/*/report.json")
            if p.parent.name.endswith("-drift") == (kind == "drift")
        ),
        key=lambda p: p.stat().st_mtime,
    )
    assert found, f"no report under {reports}"
    data: dict[str, Any] = json.loads(found[-1].read_text(encoding="utf-8"))
    return data


#: What a read-only command may still write under the lab's state directory: its own run
#: artifacts (ansible-runner's events), the crash log directory, the lock's holder line and
#: ssh's connection sockets.
RUN_ARTIFACTS = ("runs", "logs", "lock", "cm-")


def _tree_hashes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256, inode and mtime of every regular file under ``root`` (a file rewritten with
    the same bytes is a write too), each symlink's target and each directory's mode, by
    path; top-level entries starting with one of ``skip`` are left out."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0].startswith(skip):
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[str(rel)] = "-> " + str(path.readlink())
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(rel)] = f"{digest} inode {st.st_ino} mtime {st.st_mtime_ns}"
        elif stat.S_ISDIR(st.st_mode):
            found[str(rel)] = f"dir {stat.S_IMODE(st.st_mode):o}"
    return found


def _read_only_trees(lab: Any) -> dict[str, dict[str, str]]:
    """The lab's state directory, and the datasets only the operator's host writes (the
    nodes mount them read-only: models, corpora). The read-write datasets are left out:
    PostgreSQL and the journal receiver write to them on their own, whatever mlseclab runs."""
    trees = {"state": _tree_hashes(lab.state / lab.spec.lab.name, RUN_ARTIFACTS)}
    for name in lab.spec.datasets:
        if lab.spec.mounts_of(name) and not lab.spec.mounts_of(name, writers_only=True):
            trees[f"dataset {name}"] = _tree_hashes(lab.names.dataset_dir(name))
    return trees


def test_drift_on_the_hardened_lab_finds_nothing_and_verify_passes(
    lab: Any, reports_dir: Path
) -> None:
    """`drift` on a freshly hardened lab: no infrastructure drift, check mode reports zero
    changes and zero failures on every node, and every posture check passes (or is N/A by
    control id). This is also the issue's "harden --check on a hardened lab" proof (the
    configuration layer is `harden --check`: lifecycle.harden_lab(check=True)), and the
    proof that both write nothing but their run artifacts: the state directory and the
    read-only datasets are byte-identical afterwards."""
    before = _read_only_trees(lab)
    assert before["state"] and any(k.startswith("dataset") for k in before)
    proc = lab.cli("drift")
    assert _read_only_trees(lab) == before, "drift wrote into the state or a dataset"
    drift = _latest_report(reports_dir, "drift")
    assert drift["layers_run"] == ["infrastructure", "configuration", "posture"]
    assert not drift["errors"], drift["errors"]
    wrong = [(f["layer"], f["node"], f["what"][:80], f["found"]) for f in drift["findings"]]
    assert proc.returncode == 0 and not wrong, f"{wrong}\n{proc.stdout[-3000:]}"
    verify = _latest_report(reports_dir)  # the posture layer's verify run
    assert verify["passed"] and not verify["broken"]
    assert set(verify["nodes"]) == {*lab.topo.nodes, LAB_SCOPE}
    assert set(verify["counts"]) <= {"passed", "not_applicable"}, verify["counts"]
    for r in verify["results"]:
        if r["outcome"] == "not_applicable":
            assert r["controls"]["lab"] and r["evidence"], r
    for name in ("report.json", "junit.xml", "report.html"):
        assert any(reports_dir.glob(f"*/*/{name}"))


def _lab_scope_checks() -> set[str]:
    import ast

    from mlseclab import checkout

    found: set[str] = set()
    for path in checkout.posture_suite().glob("test_*.py"):
        for fn in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_"):
                args = {a.arg for a in fn.args.args}
                if "node" not in args:
                    found.add(fn.name)
    return found


def test_every_tamper_makes_its_checks_fail_and_reverts(lab: Any) -> None:
    """The table's proof: apply each tamper, its checks FAIL, revert, and verify is clean again.

    Node-only tampers run in parallel across nodes (one at a time per node); tampers
    that also open the router run alone at the end.
    """
    tampers = all_tampers()
    lab_scope = _lab_scope_checks()
    state = lab.state / "hard"

    def run(t: Tamper) -> TamperProof:
        return prove(
            t,
            spec_path=lab.spec_path,
            state=state,
            topo=lab.topo,
            names=lab.names,
            lab_scope_checks=lab_scope,
        )

    by_node: dict[str, list[Tamper]] = {}
    for t in tampers:
        if not t.router_apply:
            by_node.setdefault(t.node, []).append(t)
    proofs: list[TamperProof] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(by_node) or 1) as pool:
        for result in pool.map(lambda ts: [run(t) for t in ts], by_node.values()):
            proofs += result
    proofs += [run(t) for t in tampers if t.router_apply]
    unproven = [
        f"{p.tamper} on {p.node}: {p.outcomes} {p.error}".strip() for p in proofs if not p.proven
    ]
    assert not unproven, f"{len(unproven)} of {len(proofs)} tampers not proven:\n" + "\n".join(
        unproven
    )
    after = lab.cli("verify")
    assert after.returncode == 0, "a revert left the lab changed:\n" + after.stdout[-3000:]


# -- drift: the tampers, all at once, named by layer and node; --fix clears them ----

DRIFT_TAMPERS: list[tuple[str, str, tuple[str, ...], str]] = [
    # (node, shell as root on it, the layers one of which must name it, a word in its finding)
    # A failing task ends the node's play in check mode, so a tamper the roles assert on
    # (the extra uid 0) can hide later tasks' diffs: those are named by the posture layer.
    (
        "vectordb-01",
        "useradd -o -u 0 -g 0 -M -s /usr/sbin/nologin tamper0",
        ("configuration", "posture"),
        "uid 0",
    ),
    (
        "vectordb-01",
        "f=$(ls /etc/postgresql/*/main/pg_hba.conf) && "
        "sed -i '1i host all all 0.0.0.0/0 trust' $f && systemctl reload 'postgresql@*-main'",
        ("configuration", "posture"),
        "trust",
    ),
    (
        "gateway-01",
        "sed -i 's/^MaxAuthTries .*/MaxAuthTries 10/' /etc/ssh/sshd_config && systemctl reload ssh",
        ("configuration",),
        "sshd_config",
    ),
    (
        "gateway-01",
        "chmod 0644 /etc/nginx/mlseclab/api-keys.json",
        ("configuration", "posture"),
        "api-keys",
    ),
    (
        "obs-01",
        "nft insert rule inet mlseclab_node input tcp dport 7777 accept comment tamper",
        ("posture",),
        "7777",
    ),
    (
        "obs-01",
        "systemd-run --unit=tamper-listener python3 -m http.server --bind 0.0.0.0 8099 && sleep 2",
        ("posture",),
        "8099",
    ),
]
# and from the host: a model byte flipped (inference-01), rag-01's container stopped,
# the obs segment's bridge deleted


def test_drift_names_every_tamper_and_fix_clears_them(lab: Any, reports_dir: Path) -> None:
    for node, command, _, _ in DRIFT_TAMPERS:
        proc = on_node(lab.ssh_config, node, command)
        assert proc.returncode == 0, f"{node}: {command}: {proc.stderr}"
    model = lab.names.dataset_dir("models") / "all-MiniLM-L6-v2-f16.gguf"
    with model.open("r+b") as fh:
        fh.seek(8192)
        byte = fh.read(1)
        fh.seek(8192)
        fh.write(bytes([byte[0] ^ 0xFF]))
    subprocess.run(
        ["ip", "-n", lab.names.router_ns, "link", "del", lab.names.bridge("obs")], check=True
    )
    from mlseclab.targets.local import nodes

    assert nodes.stop("rag-01", lab.names)

    proc = lab.cli("drift")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = _latest_report(reports_dir, "drift")
    findings = report["findings"]

    def named(layers: tuple[str, ...], node: str, word: str = "") -> bool:
        return any(
            f["layer"] in layers
            and f["node"] == node
            and word.lower() in (f["what"] + f["found"] + f["detail"]).lower()
            for f in findings
        )

    missing = [
        f"{'/'.join(layers)} {node} {word!r}"
        for node, _, layers, word in DRIFT_TAMPERS
        if not named(layers, node, word)
    ]
    for layer, node, word in (
        ("infrastructure", "router", "br-obs"),
        ("infrastructure", "rag-01", "container"),
        ("infrastructure", "inference-01", "model"),
    ):
        if not named((layer,), node, word):
            missing.append(f"{layer} {node} {word!r}")
    assert not missing, (
        "drift did not name: "
        + ", ".join(missing)
        + "\n"
        + json.dumps(
            [(f["layer"], f["node"], f["what"][:60], f["found"][:40]) for f in findings], indent=0
        )
    )

    fixed = lab.cli("drift", "--fix")  # ends with verify: exit 0 only when every check passes
    assert fixed.returncode == 0, fixed.stdout[-4000:] + fixed.stderr[-2000:]
    infra = lab.cli("drift", "--layers", "infrastructure")
    assert infra.returncode == 0, infra.stdout[-3000:]
    model = lab.names.dataset_dir("models") / "all-MiniLM-L6-v2-f16.gguf"
    assert any((lab.names.lab_dir / "quarantine" / "models").glob("*/" + model.name))
