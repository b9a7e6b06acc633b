"""The local target: plan, up, down, rebuild, restore and status of a lab on this host.

``up`` converges: each step looks at what is live and does only what is
missing, so a second run changes nothing and a run killed half-way is finished
by the next one. ``down`` undoes in reverse and is safe to repeat; with
``--force`` it also finds what a crashed run left behind by name alone.

Directories are different: ``up`` records in the lab's state each directory it makes
under the lab's own directory ``<datasets_root>/<lab>/`` before it makes it, and
``down`` removes only recorded ones, each checked to lie inside that directory with no
symbolic link on the way. Anything else is left alone and reported. What ``down``
keeps (protected datasets) stays recorded in ``kept.json`` next to the state.

Protected datasets are snapshotted (:mod:`mlseclab.targets.local.snapshots`) before ``down``
or ``rebuild`` destroys a node that mounts them: the nodes are stopped first,
then the copy is taken, then anything is removed.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mlseclab import process, ui
from mlseclab.drift import DriftFinding
from mlseclab.errors import LabError, TargetError
from mlseclab.harden import ROLE_VARS
from mlseclab.inventory import write_inventory
from mlseclab.secrets import ensure_secrets
from mlseclab.spec import Role
from mlseclab.state import LabHome, write_private
from mlseclab.targets import NodeStatus, Plan, PlannedAction
from mlseclab.targets.local import host, network, nodes, router_metrics
from mlseclab.targets.local.artifacts import (
    ensure_corpus,
    pinned_model_files,
    prepare_local,
    refuse_gpu_only,
)
from mlseclab.targets.local.image import ImageCache
from mlseclab.targets.local.names import LocalNames
from mlseclab.targets.local.snapshots import Snapshot, SnapshotStore, human, tree_bytes
from mlseclab.templating import render
from mlseclab.topology import Topology

RUNTIME_KIND = "container"
#: The state's list of the directories ``up`` made (absolute paths, in creation order).
MADE = "made"


class LocalTarget:
    kind = "local"
    runtime_kind = RUNTIME_KIND
    rebuilds = True

    def __init__(
        self, spec: Any, topology: Topology, home: LabHome, spec_path: Path | None = None
    ) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.topo = topology
        self.home = home
        self.names = LocalNames(spec.lab.name, Path(spec.lab.local.datasets_root))
        self.images = ImageCache(self.names.image_root)
        self.snapshots = SnapshotStore(self.names.snapshots_dir)
        self.changes: list[str] = []

    # -- shared ------------------------------------------------------------------
    def _lab_cidrs(self) -> list[str]:
        return [s.cidr for s in self.spec.networks.values()] + [self.spec.lab.local.uplink_cidr]

    def _mounts(self, node: str) -> list[nodes.Mount]:
        return [
            nodes.Mount(self.names.dataset_dir(m.dataset), m.path, m.mode == "ro")
            for m in self.spec.nodes[node].mounts
        ]

    def users_of(self, dataset: str, *, writers_only: bool = False) -> list[str]:
        """The nodes that mount ``dataset`` (read-write only, with ``writers_only``)."""
        return list(self.topo.mounts_of(dataset, writers_only=writers_only))

    def router_metrics(self) -> dict[str, Any] | None:
        """Where the router's drop counters are served, and who may scrape them: the
        observability nodes' management addresses (None: the lab has no such node)."""
        scrapers = [n.mgmt.ip for n in self.topo.nodes.values() if n.role == Role.OBSERVABILITY]
        if not scrapers:
            return None
        mgmt = self.spec.networks[self.spec.mgmt_segment_name()]
        return {
            "address": str(mgmt.gateway_address),
            "port": router_metrics.METRICS_PORT,
            "scrapers": sorted(scrapers),
        }

    def router_ruleset(self) -> str:
        ingress = [(LocalNames.bridge(s), s) for s in self.spec.networks]
        ingress.append((self.names.router_uplink, router_metrics.OPERATOR_SEGMENT))
        return render(
            "router.nft.j2",
            lab=self.spec.lab.name,
            table=self.names.nft_table,
            rules=self.topo.rules,
            ingress=ingress,
            metrics=self.router_metrics(),
        )

    def leftovers(self) -> list[str]:
        """Live resources named for this lab (what a crashed run may have left)."""
        found = [f"netns {n}" for n in network.list_netns(self.names.netns_prefix)]
        found += [f"container {n} (pid {p})" for n, p in nodes.find_nspawn_pids(self.names).items()]
        if network.link_exists(self.names.host_uplink):
            found.append(f"link {self.names.host_uplink}")
        found += [
            f"router metrics exporter (pid {p})"
            for p in self.router_metrics_pids() + self.router_metrics_pids(stale=True)
        ]
        nodes_dir = self.names.lab_dir / "nodes"
        if nodes_dir.is_dir():
            found += [
                f"mount {d / 'root'}"
                for d in sorted(nodes_dir.iterdir())
                if process.is_mounted(d / "root")
            ]
        return found

    # -- plan ----------------------------------------------------------------------
    def plan(self, *, offline: bool = False) -> Plan:
        """What up would make on this host (always local: ``offline`` changes nothing)."""
        out: list[PlannedAction] = []

        def add(exists: bool, kind: str, name: str, details: str = "") -> None:
            out.append(PlannedAction("exists" if exists else "create", kind, name, details))

        add(
            self.images.ready,
            "image",
            f"debian {self.images.spec.suite}",
            f"{self.images.rootfs} (cache key {self.images.spec.key()})",
        )
        for ds_name, ds in self.spec.datasets.items():
            add(
                self.names.dataset_dir(ds_name).is_dir(),
                "dataset",
                ds_name,
                f"{self.names.dataset_dir(ds_name)}{' (protected)' if ds.protect else ''}",
            )
        rns = self.names.router_ns
        add(network.netns_exists(rns), "netns", rns, "router: gateways and the flow policy")
        for seg_name, seg in self.spec.networks.items():
            add(
                network.link_exists(self.names.bridge(seg_name), rns)
                if network.netns_exists(rns)
                else False,
                "bridge",
                self.names.bridge(seg_name),
                f"segment {seg_name}: {seg.cidr}, gateway {seg.gateway_address}, vlan {seg.vlan}",
            )
        add(
            network.link_exists(self.names.host_uplink),
            "veth",
            self.names.host_uplink,
            f"operator uplink {self.topo.operator_address} -> {self.topo.router_uplink_address}",
        )
        add(
            network.netns_exists(rns),
            "nftables",
            f"{rns}/{self.names.nft_table}",
            f"forward policy drop, {len(self.topo.rules)} allow rules "
            f"from {len(self.spec.flows)} flows",
        )
        for node in self.topo.nodes.values():
            running = nodes.nspawn_pid(node.name, self.names) is not None
            nics = ", ".join(f"{i.name} {i.network} {i.cidr}" for i in node.interfaces)
            add(
                network.netns_exists(self.names.node_ns(node.name)),
                "netns",
                self.names.node_ns(node.name),
                nics,
            )
            mounts = ", ".join(
                f"{m.dataset}:{m.path}:{m.mode}" for m in self.spec.nodes[node.name].mounts
            )
            gpu = self.spec.nodes[node.name].gpu
            detail = f"{node.role}, nspawn, mgmt {node.mgmt.ip}" + (
                f", mounts {mounts}" if mounts else ""
            )
            if gpu is not None:
                detail += f" (gpu mapping {gpu.mapping}: proxmox only, not on local)"
            add(running, "container", node.name, detail)
        add(
            self.home.inventory.exists(),
            "inventory",
            str(self.home.inventory),
            "groups by role, host vars from the spec",
        )
        return Plan(resources=out)

    # -- up ------------------------------------------------------------------------
    def _record(self, items: list[str]) -> None:
        self.changes += items
        for item in items:
            ui.info(f"  [green]+[/] {ui.esc(item)}")

    def up(self) -> None:
        refuse_gpu_only(self.spec)
        host.preflight(self._lab_cidrs(), [self.names.host_uplink])
        with self.home.lock("up"):
            state = self.home.read_state()
            if not state:
                left = self.leftovers()
                if left:
                    raise TargetError(
                        f"lab {self.spec.lab.name} has leftovers from a crashed run that the "
                        f"state does not know: {', '.join(left[:6])}"
                        f"{' ...' if len(left) > 6 else ''}; clear them with "
                        "`mlseclab down --force`"
                    )
            state.update(
                {
                    "lab": self.spec.lab.name,
                    "target": "local",
                    "phase": "up",
                    "started": time.time(),
                }
            )
            if state and MADE not in state:
                adopted = self.layout_dirs()
                if adopted:
                    ui.plain(
                        "up: the lab's state was written by an older mlseclab, which kept no "
                        f"record of its directories; recording the {len(adopted)} of the "
                        f"lab's own layout found under {self.names.lab_dir}"
                    )
                state[MADE] = adopted
            made = [*state.get(MADE, [])]
            state[MADE] = made + [p for p in self._read_kept() if p not in made]
            self.home.write_state(state)
            self._up(state)
            state.update(
                {"phase": "ready", "finished": time.time(), "image": self.images.spec.key()}
            )
            self.home.write_state(state)

    def _up(self, state: dict[str, Any]) -> None:
        key = self.home.ensure_ssh_key()
        pubkey = key.with_suffix(".pub").read_text(encoding="utf-8")
        with ui.step("node image (debian trixie)"):
            image, built = self.images.ensure()
        if built:
            self._record([f"image {self.images.spec.key()}"])
        read_only = {
            m.dataset for n in self.spec.nodes.values() for m in n.mounts if m.mode == "ro"
        }
        for ds in self.spec.datasets:
            d = self.names.dataset_dir(ds)
            if self.make_dir(state, d, 0o750):
                self._record([f"dataset {ds} ({d})"])
            # a node cannot change a read-only mount: its services must be able to enter it
            # (files stay root-owned and read-only); read-write datasets belong to their roles
            if ds in read_only and d.stat().st_mode & 0o777 != 0o755:
                d.chmod(0o755)
                self._record([f"dataset {ds} mode 0755 (mounted read-only)"])
        with ui.step("network: router, bridges, uplink, flow policy"):
            self._record(network.ensure_router(self.topo, self.names))
            self._record(network.ensure_uplink(self.topo, self.names))
            self.make_dir(state, self.names.lab_dir)
            self._apply_router_policy()
            self._ensure_router_metrics()
        booting: list[str] = []
        host_keys: dict[str, str] = state.setdefault("host_keys", {})
        with ui.step(f"nodes: {len(self.topo.nodes)} containers"):
            router = network.snapshot(self.names.router_ns)
            for node in self.topo.nodes.values():
                self._record(network.ensure_node_network(node, self.names, router))
                self.make_dir(state, self.names.node_dir(node.name))
                if nodes.ensure_rootfs(node.name, self.names, image):
                    self._record([f"rootfs {node.name}"])
                if nodes.nspawn_pid(node.name, self.names) is None:
                    if nodes.restore_identity(node.name, self.names):
                        self._record([f"identity {node.name} (host key and machine id kept)"])
                    host_keys[node.name] = nodes.write_identity(
                        node, self.names, self.spec.lab.domain, pubkey
                    )
                    nodes.start(node.name, self.names, self._mounts(node.name))
                    booting.append(node.name)
                    self._record([f"container {node.name}"])
                elif node.name not in host_keys:
                    host_keys[node.name] = self._read_host_key(node.name)
                self.home.write_state(state)
        with (
            ui.step("waiting for systemd and sshd on every node"),
            concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool,
        ):
            futures = {
                n: pool.submit(nodes.wait_ready, self.topo.nodes[n], self.names)
                for n in self.topo.nodes
            }
            states = {n: f.result() for n, f in futures.items()}
        degraded = [n for n, s in states.items() if s != "running"]
        if degraded:
            ui.warn(
                f"systemd reports degraded on {', '.join(degraded)} "
                "(`mlseclab ssh NODE systemctl --failed` shows why)"
            )
        self._write_access(host_keys)
        self._record(ensure_secrets(self.topo, self.home))
        # what the roles need from this machine (models, wheelhouse), recorded for harden
        state[ROLE_VARS] = prepare_local(self.spec, self.names.dataset_dir, image)
        if self.spec_path is not None:
            self._record(ensure_corpus(self.spec, self.spec_path, self.names.dataset_dir))
        self.home.write_state(state)

    def make_dir(self, state: dict[str, Any], path: Path, mode: int = 0o777) -> bool:
        """Make ``path`` (inside the lab's directory) and its missing parents up to the lab's
        directory, recording each in the state before it is made; True when ``path`` was
        made now. The datasets root above is the operator's and is never recorded."""
        lab = self.names.lab_dir
        if path != lab and not path.is_relative_to(lab):
            raise TargetError(f"{path} is outside the lab's directory {lab}")
        chain = [path, *(p for p in path.parents if p.is_relative_to(lab))][::-1]
        lab.parent.mkdir(parents=True, exist_ok=True)
        made: list[str] = state.setdefault(MADE, [])
        created = False
        for d in chain:
            if d.is_symlink():
                raise TargetError(
                    f"{d} is a symbolic link; the lab's directories must be real ones: "
                    "remove the link and run `mlseclab up` again"
                )
            if d.is_dir():
                continue
            if str(d) not in made:
                made.append(str(d))
                self.home.write_state(state)  # recorded before it exists: a crash leaks nothing
            d.mkdir(mode=mode if d == path else 0o777)
            created = True
        return created

    def layout_dirs(self) -> list[str]:
        """The directories of the lab's own layout that exist now: the lab's directory, its
        nodes/ and datasets/ and each node's and dataset's directory, each a real directory
        inside the lab's directory (:meth:`outside_lab`). What an older mlseclab made without
        recording it; only a state written before the record existed adopts them."""
        lab = self.names.lab_dir
        candidates = [
            lab,
            lab / "nodes",
            lab / "datasets",
            *(self.names.node_dir(n) for n in self.spec.nodes),
            *(self.names.dataset_dir(d) for d in self.spec.datasets),
        ]
        return [
            str(d)
            for d in candidates
            if d.is_dir() and not d.is_symlink() and self.outside_lab(d) is None
        ]

    def remember_made(self, paths: Iterable[Path]) -> None:
        """Record directories mlseclab made outside ``up`` (a restore into a missing
        dataset): in the state while the lab is up, else with what down kept."""
        new = [str(p) for p in paths if p.is_dir() and self.outside_lab(p) is None]
        if not new:
            return
        state = self.home.read_state()
        if state:
            made: list[str] = state.setdefault(MADE, [])
            made += [p for p in new if p not in made]
            self.home.write_state(state)
            return
        kept = self._read_kept()
        kept += [p for p in new if p not in kept]
        write_private(self.home.kept_file, json.dumps(kept, indent=2) + "\n")

    def _read_kept(self) -> list[str]:
        try:
            kept = json.loads(self.home.kept_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except json.JSONDecodeError:
            ui.warn(f"{self.home.kept_file} is corrupt; what it recorded is left alone")
            return []
        return [str(p) for p in kept] if isinstance(kept, list) else []

    def recorded(self, state: dict[str, Any]) -> set[str] | None:
        """The directories the lab's state says mlseclab made; None when it records none
        (a state written before the record existed, or no state at all)."""
        kept = self._read_kept()
        if MADE not in state and not kept:
            return None
        return {str(p) for p in state.get(MADE, [])} | set(kept)

    def why_kept(self, path: Path, made: set[str] | None) -> str | None:
        """Why ``down`` must not remove ``path``, or None when it may."""
        if made is None:
            return "no state records that mlseclab made it"
        if str(path) not in made:
            return "the lab's state does not record that mlseclab made it"
        return self.outside_lab(path)

    def outside_lab(self, path: Path) -> str | None:
        """Why ``path`` is not inside the lab's own directory (a symlink on the way counts),
        or None when it is."""
        lab = self.names.lab_dir
        if path != lab and not path.is_relative_to(lab):
            return f"it is outside the lab's directory {lab}"
        for d in [lab, *(p for p in path.parents if p.is_relative_to(lab) and p != lab), path]:
            if d.is_symlink():
                return f"{d} is a symbolic link"
        if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(lab)):
            return f"it resolves outside the lab's directory {lab}"
        return None

    def remove_tree(self, path: Path, made: set[str] | None, what: str, left: list[str]) -> bool:
        """rmtree ``path`` when :meth:`why_kept` allows; else note it in ``left``."""
        if not path.exists() and not path.is_symlink():
            return False
        why = self.why_kept(path, made)
        if why is not None:
            left.append(f"{what} at {path}: {why}")
            return False
        shutil.rmtree(path)  # fd-based on Linux: never follows a symlink inside the tree
        return True

    def _read_host_key(self, node: str) -> str:
        pub = self.names.node_dir(node) / "root" / "etc" / "ssh" / "ssh_host_ed25519_key.pub"
        return pub.read_text(encoding="utf-8").split(" ", 2)[1]

    def live_router_table(self) -> str | None:
        """The router's table as nftables lists it, without counter values (None: absent)."""
        live = process.run(
            [
                "ip",
                "netns",
                "exec",
                self.names.router_ns,
                "nft",
                "--stateless",
                "list",
                "table",
                "inet",
                self.names.nft_table,
            ],
            check=False,
        )
        return live.stdout if live.returncode == 0 else None

    def _apply_router_policy(self) -> None:
        ruleset = self.router_ruleset()
        rendered, applied = self.names.lab_dir / "router.nft", self.names.lab_dir / "router.live"
        if (
            rendered.exists()
            and rendered.read_text(encoding="utf-8") == ruleset
            and applied.exists()
            and applied.read_text(encoding="utf-8") == self.live_router_table()
        ):
            return
        nft = ["ip", "netns", "exec", self.names.router_ns, "nft"]
        process.run([*nft, "--check", "-f", "-"], input_text=ruleset)
        process.run([*nft, "-f", "-"], input_text=ruleset)
        write_private(rendered, ruleset, 0o644)
        write_private(applied, self.live_router_table() or "", 0o644)
        self._record([f"nftables {self.names.nft_table} ({len(self.topo.rules)} rules)"])

    def router_metrics_pids(self, *, stale: bool = False) -> list[int]:
        """This lab's running router exporters, found in /proc: those in the router
        namespace as it is now (or, with ``stale``, those in any other one)."""
        try:
            current = Path(f"/run/netns/{self.names.router_ns}").stat().st_ino
        except OSError:
            current = None
        found = []
        for pid in process.find_pids(router_metrics.MARKER, f"--lab={self.names.lab}"):
            try:
                here = Path(f"/proc/{pid}/ns/net").stat().st_ino == current
            except OSError:
                continue
            if here != stale:
                found.append(pid)
        return found

    def _ensure_router_metrics(self) -> None:
        """Start the router's drop-counter exporter unless it runs (the lab needs an
        observability node to scrape it)."""
        m = self.router_metrics()
        for pid in self.router_metrics_pids(stale=True):  # left in a router namespace since re-made
            process.terminate(pid)
        if m is None or self.router_metrics_pids():
            return
        cmd = router_metrics.command(
            self.names.lab, self.names.router_ns, m["address"], self.names.nft_table
        )
        log = self.names.lab_dir / "router-metrics.log"
        if nodes.host_runs_systemd():
            unit = f"mlsl-{self.names.lab}-router-metrics"
            process.run(["systemctl", "reset-failed", unit], check=False)
            process.run(
                [
                    "systemd-run",
                    f"--unit={unit}",
                    "--collect",
                    "--quiet",
                    f"--property=StandardOutput=append:{log}",
                    f"--property=StandardError=append:{log}",
                    *cmd,
                ]
            )
            pid = int(process.run(["systemctl", "show", "-P", "MainPID", unit]).stdout or 0)
        else:
            with log.open("ab") as fh:
                pid = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True
                ).pid
        self._record([f"router metrics exporter on {m['address']}:{m['port']} (pid {pid})"])

    def _stop_router_metrics(self) -> bool:
        pids = self.router_metrics_pids() + self.router_metrics_pids(stale=True)
        return any([process.terminate(pid) for pid in pids])

    def _write_access(self, host_keys: dict[str, str]) -> None:
        lines = [
            f"{name} ssh-ed25519 {key}"
            for name, key in sorted(host_keys.items())
            if name in self.topo.nodes
        ]
        known = "\n".join(lines) + "\n"
        current = (
            self.home.known_hosts.read_text(encoding="utf-8")
            if self.home.known_hosts.exists()
            else ""
        )
        if current != known:
            write_private(self.home.known_hosts, known, 0o644)
        files = (self.home.inventory, self.home.ssh_config)
        before = [f.read_text(encoding="utf-8") if f.exists() else "" for f in files]
        write_inventory(self.topo, self.home, RUNTIME_KIND, "local")
        self._record(
            [
                f"file {f}"
                for f, old in zip(files, before, strict=True)
                if f.read_text(encoding="utf-8") != old
            ]
        )

    # -- down ------------------------------------------------------------------------
    def down(self, *, purge_data: bool, purge_snapshots: bool = False, force: bool) -> None:
        _require_root()
        with self.home.lock("down"):
            state = self.home.read_state()
            if not state and not force:
                left = self.leftovers()
                if left:
                    raise TargetError(
                        f"no state for lab {self.spec.lab.name}, but live resources carry its "
                        f"name: {', '.join(left[:6])}; run `mlseclab down --force` to remove them"
                    )
                ui.plain(f"lab {self.spec.lab.name} is not up; nothing to remove")
            self._down(state, purge_data=purge_data, purge_snapshots=purge_snapshots)
            self.home.forget()

    def _down(self, state: dict[str, Any], *, purge_data: bool, purge_snapshots: bool) -> None:
        names = self.names
        running = nodes.find_nspawn_pids(names)
        targets = sorted(
            set(self.topo.nodes)
            | set(running)
            | {
                p.name
                for p in (names.lab_dir / "nodes").glob("*")
                if (names.lab_dir / "nodes").is_dir()
            }
        )
        present = {n for n in targets if n in running or names.node_dir(n).exists()}
        keep_safe = (
            set() if purge_snapshots else self._to_snapshot(present, also_existing=purge_data)
        )
        self._check_snapshot_space(keep_safe)
        with (
            ui.step(f"stopping {len(targets)} containers"),
            concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool,
        ):
            stopped = dict(
                zip(targets, pool.map(lambda n: nodes.stop(n, names), targets), strict=True)
            )
        self._record_removed([f"container {n}" for n, was in stopped.items() if was])
        self._snapshot(keep_safe, "purge" if purge_data else "down", present)
        removed: list[str] = []
        for node in targets:
            if process.unmount(names.node_dir(node) / "root"):
                removed.append(f"rootfs {node}")
        for ns in network.list_netns(names.netns_prefix):
            if ns != names.router_ns and network.delete_netns(ns):
                removed.append(f"netns {ns}")
        if self._stop_router_metrics():
            removed.append("router metrics exporter")
        network.remove_host_routes(self.topo, names)
        if network.delete_link(names.host_uplink):
            removed.append(f"veth {names.host_uplink}")
        if network.delete_netns(names.router_ns):
            removed.append(f"netns {names.router_ns} (bridges, nftables)")
        for f in ("router.nft", "router.live"):
            if names.lab_dir.is_dir() and not names.lab_dir.is_symlink():
                (names.lab_dir / f).unlink(missing_ok=True)
        if purge_snapshots:
            removed += [f"snapshots of dataset {ds}" for ds in self.snapshots.purge()]
        removed += self.remove_files(targets, self.recorded(state), purge_data=purge_data)
        self._record_removed(removed)

    def remove_files(
        self, node_names: Iterable[str], made: set[str] | None, *, purge_data: bool
    ) -> list[str]:
        """Remove the node directories, the datasets (protected ones only with
        ``purge_data``) and the then empty lab directories, of those that ``made`` records
        (:meth:`why_kept`); report the rest. What is kept stays recorded in ``kept.json``.
        """
        names = self.names
        removed: list[str] = []
        left: list[str] = []
        for node in node_names:
            self.remove_tree(names.node_dir(node), made, f"node {node}", left)
        for ds_name, ds in self.spec.datasets.items():
            d = names.dataset_dir(ds_name)
            if not d.exists():
                continue
            if ds.protect and not purge_data:
                ui.info(f"  [cyan]=[/] dataset {ui.esc(ds_name)} kept (protected): {ui.esc(d)}")
                continue
            if self.remove_tree(d, made, f"dataset {ds_name}", left):
                removed.append(f"dataset {ds_name}{' (protected, purged)' if ds.protect else ''}")
        for d in (names.lab_dir / "nodes", names.lab_dir / "datasets", names.lab_dir):
            if not d.is_dir() or d.is_symlink() or any(d.iterdir()):
                continue
            why = self.why_kept(d, made)
            if why is None:
                d.rmdir()
            else:
                left.append(f"directory at {d}: {why}")
        for item in left:
            ui.warn(f"left alone: {item}; remove it by hand if it is the lab's")
        kept = [
            p
            for p in sorted(made or ())
            if Path(p).exists() and self.why_kept(Path(p), made) is None
        ]
        if kept:
            write_private(self.home.kept_file, json.dumps(kept, indent=2) + "\n")
        else:
            self.home.kept_file.unlink(missing_ok=True)
        return removed

    def _record_removed(self, items: list[str]) -> None:
        self.changes += items
        for item in items:
            ui.info(f"  [red]-[/] {ui.esc(item)}")

    # -- snapshots ---------------------------------------------------------------------
    def _to_snapshot(self, touched: Iterable[str], *, also_existing: bool = False) -> set[str]:
        """Protected datasets (with ``snapshots.before_destroy`` and ``keep`` > 0) mounted
        by a node in ``touched``; with ``also_existing`` every such dataset that exists."""
        touched = set(touched)
        out = set()
        for name, ds in self.spec.datasets.items():
            policy = ds.snapshots
            if not (ds.protect and policy.before_destroy and policy.keep > 0):
                continue
            if not self.names.dataset_dir(name).is_dir():
                continue
            if also_existing or touched & set(self.users_of(name)):
                out.add(name)
        return out

    def _check_snapshot_space(self, datasets: Iterable[str]) -> None:
        self.snapshots.check_space({ds: tree_bytes(self.names.dataset_dir(ds)) for ds in datasets})

    def _snapshot(self, datasets: Iterable[str], reason: str, touched: Iterable[str]) -> None:
        """Snapshot each dataset (its nodes are stopped), then apply its retention."""
        touched = set(touched)
        for ds in sorted(datasets):
            users = [n for n in self.users_of(ds) if n in touched]
            try:
                with ui.step(f"snapshot of dataset {ds}"):
                    snap = self.snapshots.take(
                        ds, self.names.dataset_dir(ds), reason=reason, nodes=users
                    )
            except LabError as exc:
                raise TargetError(
                    *exc.lines,
                    "nothing was removed; the stopped nodes start again with `mlseclab up`, "
                    f"and `mlseclab {'rebuild' if reason == 'rebuild' else 'down'}` can run "
                    "again once the snapshot can be taken",
                ) from None
            self._record([f"snapshot {ds}/{snap.id} ({snap.files} files, {human(snap.bytes)})"])
            keep = self.spec.datasets[ds].snapshots.keep
            self._record_removed(
                [f"snapshot {ds}/{s.id} (keep: {keep})" for s in self.snapshots.prune(ds, keep)]
            )

    def _stop(self, victims: Sequence[str]) -> list[str]:
        """Stop these nodes in parallel; returns those that were running."""
        if not victims:
            return []
        with (
            ui.step(f"stopping {', '.join(victims)}"),
            concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool,
        ):
            was = list(pool.map(lambda n: nodes.stop(n, self.names), victims))
        return [n for n, running in zip(victims, was, strict=True) if running]

    # -- drift -------------------------------------------------------------------------
    def infrastructure_drift(self, nodes: Sequence[str] | None) -> list[DriftFinding]:
        """What is live against what the spec derives (read-only)."""
        from mlseclab.targets.local.drift import infrastructure_drift

        return infrastructure_drift(self, list(nodes) if nodes is not None else None)

    def quarantine_models(self) -> list[str]:
        """Move model files that differ from their pin out of the datasets (kept as evidence).

        The next up puts the pinned file back from the model cache; a model file is
        never replaced silently, so only ``drift --fix`` does this, and says so.
        """
        moved = []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for pinned in pinned_model_files(self.spec, self.names.dataset_dir):
            if pinned.found is None or pinned.matches:
                continue
            path, file = pinned.path, pinned.path.name
            where = self.names.lab_dir / "quarantine" / pinned.dataset / stamp
            where.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.replace(where / file)
            write_private(
                where / f"{file}.why",
                f"model {pinned.name}: sha256 differed from the pin {pinned.sha256}; "
                "moved by drift --fix\n",
            )
            moved.append(f"model {pinned.name}: {path} -> {where / file}")
        return moved

    # -- rebuild -----------------------------------------------------------------------
    def destroy_nodes(self, victims: Sequence[str]) -> None:
        """The first half of a rebuild: stop the nodes, snapshot their protected datasets,
        remove their root filesystem (the overlay's upper directory) and network namespace.

        Datasets, secrets, the lab's network and each node's SSH host key and machine id
        stay; ``up`` then re-creates the nodes from the image with the same identity.
        """
        _require_root()
        with self.home.lock("rebuild"):
            state = self.home.read_state()
            if not state:
                raise TargetError(
                    f"lab {self.spec.lab.name} is not up (no {self.home.state_file}); "
                    "`mlseclab up` creates it"
                )
            keep_safe = self._to_snapshot(victims)
            self._check_snapshot_space(keep_safe)
            # a dataset is copied only while nothing writes to it: its other writers stop too
            writers = {n for ds in keep_safe for n in self.users_of(ds, writers_only=True)}
            stopping = sorted(set(victims) | writers)
            self._record_removed([f"container {n}" for n in self._stop(stopping)])
            self._snapshot(keep_safe, "rebuild", victims)
            removed: list[str] = []
            for node in victims:
                d = self.names.node_dir(node)
                nodes.save_identity(node, self.names)
                if process.unmount(d / "root"):
                    removed.append(f"rootfs {node}")
                outside = self.outside_lab(d) if d.exists() or d.is_symlink() else None
                if outside is not None:
                    raise TargetError(
                        f"{d}: {outside}; nothing of node {node} was removed: "
                        "remove that link or directory by hand"
                    )
                if d.is_dir():
                    for entry in d.iterdir():
                        if entry.name == nodes.IDENTITY_DIR:
                            continue
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry)
                        else:
                            entry.unlink()
                if network.delete_netns(self.names.node_ns(node)):
                    removed.append(f"netns {self.names.node_ns(node)}")
                network.forget_neighbours(self.names, list(self.topo.nodes[node].addresses))
            self._record_removed(removed)
            state["phase"] = "rebuild"  # up finishes it
            self.home.write_state(state)

    # -- restore -----------------------------------------------------------------------
    def restore_dataset(self, dataset: str, snapshot_id: str) -> tuple[Snapshot, Snapshot | None]:
        """Stop the nodes that mount ``dataset``, put the snapshot back (the current
        contents become a ``pre-restore`` snapshot) and start those nodes again."""
        _require_root()
        self.snapshots.get(dataset, snapshot_id)  # an unknown id fails before anything stops
        with self.home.lock("restore"):
            users = self.users_of(dataset)
            stopped = self._stop([n for n in users if nodes.nspawn_pid(n, self.names)])
            self._record_removed([f"container {n} (stopped)" for n in stopped])
            target = self.names.dataset_dir(dataset)
            lab = self.names.lab_dir
            chain = [target, *(p for p in target.parents if p.is_relative_to(lab))][::-1]
            missing = [d for d in chain if not d.exists() and not d.is_symlink()]
            try:
                with ui.step(f"restore of dataset {dataset} from {snapshot_id}"):
                    snap, pre = self.snapshots.restore(dataset, snapshot_id, target, nodes=users)
                self.remember_made(missing)
                if pre is not None:
                    self._record([f"snapshot {dataset}/{pre.id} (what was there before)"])
                self._record([f"dataset {dataset} from {snap.id} ({snap.files} files)"])
                keep = self.spec.datasets[dataset].snapshots.keep
                self._record_removed(
                    [
                        f"snapshot {dataset}/{s.id} (keep: {max(keep, 1)})"
                        for s in self.snapshots.prune(dataset, keep)
                    ]
                )
            finally:
                self._start_again(stopped)
        return snap, pre

    def _start_again(self, names: Sequence[str]) -> None:
        if not names:
            return
        for n in names:
            nodes.start(n, self.names, self._mounts(n))
        with (
            ui.step(f"starting {', '.join(names)}"),
            concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool,
        ):
            list(pool.map(lambda n: nodes.wait_ready(self.topo.nodes[n], self.names), names))
        self._record([f"container {n}" for n in names])

    # -- status ----------------------------------------------------------------------
    def status(self) -> list[NodeStatus]:
        out = []
        for node in self.topo.nodes.values():
            pid = nodes.nspawn_pid(node.name, self.names)
            if pid is not None:
                state = nodes.system_state(pid) if _is_root() else "running"
            elif network.netns_exists(self.names.node_ns(node.name)):
                state = "stopped"
            else:
                state = "absent"
            out.append(NodeStatus.of(node, RUNTIME_KIND, state, f"pid {pid}" if pid else ""))
        return out


def _is_root() -> bool:
    return os.geteuid() == 0


def _require_root() -> None:
    if not _is_root():
        raise LabError("the local target needs root; run it as root, e.g. `sudo mlseclab down`")
