"""Names of everything the local target creates, derived from the lab and node names.

Every name carries the lab, so two labs never collide, and ``down --force``
can find what a crashed run left behind by prefix alone.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

PREFIX = "mlsl"


def _short(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class LocalNames:
    lab: str
    data_root: Path  # /var/lib/mlseclab

    # -- namespaces --------------------------------------------------------
    @property
    def netns_prefix(self) -> str:
        return f"{PREFIX}-{self.lab}-"

    @property
    def router_ns(self) -> str:
        return f"{self.netns_prefix}router"

    def node_ns(self, node: str) -> str:
        return f"{self.netns_prefix}n-{node}"

    # -- links ---------------------------------------------------------------
    @staticmethod
    def bridge(segment: str) -> str:
        return f"br-{segment}"  # inside the router namespace; segment names are <= 12 chars

    @property
    def host_uplink(self) -> str:
        return f"{PREFIX}{_short(self.lab)}"  # 12 chars, in the host's namespace

    router_uplink = "uplink"

    def node_port(self, node: str, index: int) -> str:
        """The router-side end of a node NIC's veth (a bridge port)."""
        return f"v{_short(self.lab, node)}{index}"

    # -- containers and files ----------------------------------------------------
    def machine(self, node: str) -> str:
        return f"{self.lab}-{node}"

    @property
    def lab_dir(self) -> Path:
        return self.data_root / self.lab

    def node_dir(self, node: str) -> Path:
        return self.lab_dir / "nodes" / node

    def dataset_dir(self, dataset: str) -> Path:
        return self.lab_dir / "datasets" / dataset

    @property
    def snapshots_dir(self) -> Path:
        """Dataset snapshots: ``<data root>/<lab>/snapshots/<dataset>/<id>/`` (0700)."""
        return self.lab_dir / "snapshots"

    @property
    def image_root(self) -> Path:
        """Node images are shared by every lab on the host, wherever its datasets live."""
        return Path(os.environ.get("MLSECLAB_IMAGE_CACHE", "/var/lib/mlseclab/images"))

    @property
    def nft_table(self) -> str:
        return "mlseclab_router"
