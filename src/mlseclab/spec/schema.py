"""The lab spec: models, loading and every rule a spec must satisfy.

A spec is checked in two passes. pydantic checks each field on its own (types,
ranges, unknown keys); :func:`check_rules` then checks what only the whole lab
can tell (overlapping networks, addresses outside their network, flows to
roles that have no node). Both passes report every problem they find, each
with the file, the line, the dotted path and what would be valid.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path as FsPath
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlseclab import alphabets as ab
from mlseclab.catalog import BUILTIN_PREFIX, BUILTIN_SHA256, FILE_PREFIX, PICKLE_SUFFIXES
from mlseclab.errors import SpecError, SpecProblem
from mlseclab.yamlsource import Located, Path, YamlSyntaxError, load_with_lines

DNS_LABEL = re.compile(rf"^{ab.DNS_LABEL.pattern}$")
SEGMENT_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,10}[a-z0-9])?$")  # br-<name> fits IFNAMSIZ
CONTROL_ID = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")

#: Flow endpoints that are not a role or a node.
OPERATOR = "operator"  # the operator's workstation: the host on the local target
ANY = "any"  # any source at all, inside the lab or not (clients)
ALL = "all"  # every node of the lab
SPECIAL_SOURCES = (OPERATOR, ANY, ALL)

#: The account on every node that Ansible and the posture checks log in as (cloud-init on
#: Proxmox, the image on the local target). Not a flow endpoint: see OPERATOR above.
OPERATOR_USER = "mlseclab"
#: The default host directory of the lab's datasets (and of mlseclab's caches).
DATASETS_ROOT = "/var/lib/mlseclab"
SPECIAL_DESTINATIONS = (ALL,)

CERT_NAME_MAX = 64  # a certificate's common name (RFC 5280 ub-common-name): <node>.<domain>
MACHINE_NAME_MAX = 64  # systemd's machine names, <lab>-<node> on the local target


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Purpose(StrEnum):
    MGMT = "mgmt"
    EDGE = "edge"
    INFERENCE = "inference"
    DATA = "data"
    APP = "app"
    OBS = "obs"


class Role(StrEnum):
    GATEWAY = "gateway"
    INFERENCE = "inference"
    VECTORDB = "vectordb"
    RAG = "rag"
    OBSERVABILITY = "observability"


class NodeKind(StrEnum):
    VM = "vm"
    CONTAINER = "container"


class Engine(StrEnum):
    """The model server of an inference node."""

    LLAMA_CPP = "llama_cpp"  # GGUF files, CPU (the local target) or GPU
    VLLM = "vllm"  # one safetensors model directory, NVIDIA GPU VMs only


def _canonical_network(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IPv4 network; write it as ADDRESS/PREFIX, e.g. 10.66.10.0/24"
        ) from None
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length; did you mean {net.network_address}/24?")
    if str(net) != value:
        raise ValueError(f"{value} has host bits set; did you mean {net}?")
    return value


def _ipv4(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address, e.g. 10.66.10.11") from None
    return value


def _checked(pattern: re.Pattern[str], what: str, valid: str, example: str) -> AfterValidator:
    return AfterValidator(ab.matcher(pattern, what, valid, example))


#: Strings limited to an alphabet that is inert wherever they are rendered (alphabets.py).
PveNode = Annotated[
    str,
    _checked(ab.PVE_NODE, "a Proxmox node name", "letters, digits and '-'", "pve-01"),
]
PveTag = Annotated[
    str,
    _checked(
        ab.PVE_TAG,
        "a Proxmox tag",
        "up to 64 lowercase letters, digits and '_', '+', '.', '-'",
        "debian-13",
    ),
]
PveMapping = Annotated[
    str,
    _checked(
        ab.PVE_MAPPING,
        "a Proxmox resource mapping id",
        "a letter, then up to 63 letters, digits, '_' and '-'",
        "gpu-inference",
    ),
]
PvePool = Annotated[
    str,
    _checked(
        ab.PVE_POOL, "a Proxmox pool id", "up to 64 letters, digits, '.', '_' and '-'", "ml-lab"
    ),
]
FreeText = Annotated[str, AfterValidator(ab.free_text)]
FlowName = Annotated[
    str,
    _checked(
        ab.FLOW_NAME,
        "a flow name",
        "up to 60 letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
        "clients-to-gateway",
    ),
]
#: The characters of one component of a path from the spec. Paths end up in
#: ``systemd-nspawn --bind=SRC:DST`` (``:`` separates), in systemd unit names (``@``
#: starts an instance, ``\`` escapes), in Ansible variables (``{{`` is Jinja), in shell
#: scripts and in sha256sum manifests (a newline adds a line): none of that is allowed.
PATH_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")
#: Length bounds of paths from the spec. A datasets root gets ``/<lab>/datasets/<name>``
#: (up to 137 more) in nspawn's ``--bind=SRC:DST:ro``; systemd-escape turns each '-' of a
#: path into 4 characters and a unit name has at most 255.
DATASETS_ROOT_MAX = 100
MOUNT_PATH_MAX = 100
MODEL_PATH_MAX = 200
PATH_CHARS = "letters, digits, '.', '_' and '-' between single slashes"

#: Kernel and OS trees, on the host and in a node: no path from the spec may be one of
#: them or lie inside one.
SYSTEM_TREES = (
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/boot",
    "/efi",
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
)
#: Directories that hold other things: a path from the spec may lie inside one, but may
#: not be one (a lab directory next to their other contents could meet a name in use).
SYSTEM_DIRS = (
    "/",
    "/var",
    "/var/lib",
    "/var/cache",
    "/var/log",
    "/var/tmp",  # noqa: S108 - a name refused, never used
    "/var/spool",
    "/tmp",  # noqa: S108 - a name refused, never used
    "/home",
    "/root",
    "/srv",
    "/opt",
    "/mnt",
    "/media",
)
#: In a node also these are whole trees: systemd mounts a tmpfs on /tmp, which would hide
#: a dataset mounted below it, and systemd-tmpfiles deletes old files under both.
NODE_TREES = (*SYSTEM_TREES, "/tmp", "/var/tmp")  # noqa: S108 - names refused


def safe_absolute_path(
    value: str, *, what: str, valid: str, max_len: int, directory: bool = False
) -> str:
    """``value`` when it is an absolute path of :data:`PATH_COMPONENT` components;
    else ValueError("'VALUE' is not WHAT: PROBLEM; VALID").

    No empty (``//``), ``.`` or ``..`` component, none that starts with ``-``, no
    trailing ``/`` (with ``directory`` exactly one is required: it marks a directory)
    and at most ``max_len`` characters.
    """

    def bad(problem: str) -> ValueError:
        return ValueError(f"{value!r} is not {what}: {problem}; {valid}")

    if not value.startswith("/"):
        raise bad("it is not an absolute path")
    if value.strip("/") == "":
        raise bad("it is the root directory")
    if len(value) > max_len:
        raise bad(f"it is longer than {max_len} characters")
    odd = sorted({c for c in value if c != "/" and not PATH_COMPONENT.fullmatch(c)})
    if odd:
        shown = " ".join(repr(c) for c in odd)
        raise bad(f"{shown} cannot be in a path here")
    body = value
    if directory:
        if not value.endswith("/"):
            raise bad("a directory ends in /")
        body = value[:-1]
    if body.endswith("/"):
        raise bad("it ends in /" if not directory else "it ends in //")
    parts = body[1:].split("/")
    if "" in parts:
        raise bad("it has an empty component (//)")
    if any(p in (".", "..") for p in parts):
        raise bad("it has a '.' or '..' component")
    if any(p.startswith("-") for p in parts):
        raise bad("a component starts with '-'")
    return value


def system_path_problem(path: str, trees: Iterable[str] = SYSTEM_TREES) -> str | None:
    """What makes ``path`` (a safe absolute path) a system path, or None.

    It is one, when it is or lies inside one of ``trees``, when it is one of
    :data:`SYSTEM_DIRS`, or when it contains any of these (``/`` and ``/var`` do)."""
    path = path.rstrip("/") or "/"
    for tree in trees:
        if path == tree or path.startswith(f"{tree}/"):
            where = f"it is {tree}" if path == tree else f"it lies inside {tree}"
            if tree in SYSTEM_TREES:
                return f"{where}, a kernel or OS directory"
            return f"{where}, a temporary directory the system cleans"
    every = (*trees, *SYSTEM_DIRS)
    if path in every:
        return "it is a system directory"
    inside = [d for d in every if d.startswith(f"{path.rstrip('/')}/")]
    return f"it contains the system directory {inside[0]}" if inside else None


class LocalSettings(Strict):
    """Settings of the local target (one Linux host)."""

    uplink_cidr: str = Field(
        default="10.66.255.0/30",
        description="transit /30 between the host (operator) and the lab's router namespace",
    )
    datasets_root: str = Field(
        default=DATASETS_ROOT,
        description="host directory under which datasets live as <lab>/datasets/<name>",
    )

    _net = field_validator("uplink_cidr")(_canonical_network)

    @field_validator("datasets_root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        valid = f"use a directory of its own like /var/lib/mlseclab ({PATH_CHARS})"
        what = "a datasets root"
        safe_absolute_path(value, what=what, valid=valid, max_len=DATASETS_ROOT_MAX)
        problem = system_path_problem(value)
        if problem:
            raise ValueError(f"{value!r} is not {what}: {problem}; {valid}")
        return value


class ProxmoxTemplate(Strict):
    vm_id: Annotated[int, Field(ge=100, le=999_999_999)] | None = None
    tag: PveTag | None = None


class ProxmoxSettings(Strict):
    """Settings of the Proxmox target; the token never goes here (environment or secret)."""

    endpoint: str = Field(description="https://HOST:8006/ of the cluster API")
    nodes: list[PveNode] = Field(min_length=1, description="Proxmox node names that may host VMs")
    template: ProxmoxTemplate = Field(description="cloud-init template to clone: vm_id or tag")
    datastore: str = Field(default="local-zfs", description="datastore for VM disks")
    network_mode: Literal["bridge", "sdn"] = "bridge"
    lab_bridge: str = Field(default="vmbr1", description="VLAN-aware bridge for lab segments")
    mgmt_bridge: str = Field(
        default="vmbr0", description="the host's management bridge: never touched"
    )
    sdn_zone: str = Field(default="mlsl", description="SDN VLAN zone id when network_mode is sdn")
    insecure: bool = Field(default=False, description="accept a self-signed API certificate")
    pool: PvePool | None = Field(
        default=None, description="resource pool (default: mlseclab-<lab>)"
    )
    clone_parallelism: Annotated[int, Field(ge=1, le=8)] = 2

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        found = ab.ENDPOINT.fullmatch(value)
        port = int(found["port"]) if found and found["port"] else 8006
        if not found or not 1 <= port <= 65535 or ".." in found["host"]:
            raise ValueError(
                f"{ab.shown(value)} is not an API endpoint; write it as "
                "https://HOST:PORT/ with a DNS name or IPv4 address, e.g. https://pve.example:8006/"
            )
        return value

    _datastore = field_validator("datastore")(
        ab.matcher(
            ab.PVE_STORAGE,
            "a Proxmox storage id",
            "a lowercase letter, then lowercase letters, digits, '.', '_' and '-'",
            "local-zfs",
        )
    )
    _bridges = field_validator("lab_bridge", "mgmt_bridge")(
        ab.matcher(
            ab.PVE_BRIDGE,
            "a bridge name",
            "a letter, then up to 14 letters, digits and '_'",
            "vmbr1",
        )
    )
    _zone = field_validator("sdn_zone")(
        ab.matcher(
            ab.PVE_SDN_ZONE,
            "a Proxmox SDN zone id",
            "2-8 letters and digits, starting with a letter",
            "mlsl",
        )
    )


class LabSettings(Strict):
    name: str = Field(description="lab name: DNS label, names state, namespaces and resources")
    domain: str = Field(default="lab.internal", description="DNS domain of the lab's nodes")
    target: Literal["local", "proxmox"] = "local"
    local: LocalSettings = LocalSettings()
    proxmox: ProxmoxSettings | None = None

    _domain = field_validator("domain")(ab.dns_name)

    @field_validator("name")
    @classmethod
    def _dns(cls, value: str) -> str:
        if not DNS_LABEL.match(value) or len(value) > 24:
            raise ValueError(
                f"{value!r} is not a lab name; use 1-24 lowercase letters, digits and '-', "
                "starting with a letter"
            )
        return value


class Segment(Strict):
    vlan: int = Field(description="802.1Q VLAN id on Proxmox (1-4094)")
    cidr: str = Field(description="the segment's IPv4 network, canonical (no host bits)")
    gateway: str | None = Field(default=None, description="router address (default: first host)")
    purpose: Purpose

    _net = field_validator("cidr")(_canonical_network)

    @field_validator("vlan")
    @classmethod
    def _vlan(cls, value: int) -> int:
        if not 1 <= value <= 4094:
            raise ValueError(f"VLAN id {value} is out of range; valid VLAN ids are 1-4094")
        return value

    @field_validator("gateway")
    @classmethod
    def _gw(cls, value: str | None) -> str | None:
        return None if value is None else _ipv4(value)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def gateway_address(self) -> ipaddress.IPv4Address:
        if self.gateway is not None:
            return ipaddress.IPv4Address(self.gateway)
        return next(self.network.hosts())


class SnapshotPolicy(Strict):
    keep: Annotated[int, Field(ge=0, le=1000)] = 7
    before_destroy: bool = Field(default=True, description="snapshot before down/rebuild")


class DatasetProperties(Strict):
    recordsize: Literal["4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M"] = "128K"
    compression: Literal["off", "lz4", "zstd", "gzip"] = "lz4"
    encryption: bool = False
    atime: bool = False


class Dataset(Strict):
    description: FreeText = ""
    properties: DatasetProperties = DatasetProperties()
    protect: bool = Field(default=False, description="survives down and rebuild")
    snapshots: SnapshotPolicy = SnapshotPolicy()


class Nic(Strict):
    network: str
    ip: str
    mac: str | None = None

    _ip = field_validator("ip")(_ipv4)

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$", value):
            raise ValueError(f"{value!r} is not a MAC address; write it as bc:24:11:00:00:01")
        return value


class Gpu(Strict):
    mapping: PveMapping = Field(
        description="name of a Proxmox PCI resource mapping (never a raw PCI id)"
    )
    pcie: bool = True
    count: Annotated[int, Field(ge=1, le=4)] = 1


class Mount(Strict):
    dataset: str
    path: str
    mode: Literal["ro", "rw"] = "ro"

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        valid = f"use an absolute path like /srv/models ({PATH_CHARS})"
        what = "a mount point"
        safe_absolute_path(value, what=what, valid=valid, max_len=MOUNT_PATH_MAX)
        problem = system_path_problem(value, NODE_TREES)
        if problem:
            valid = "mount datasets in a directory of their own, e.g. /srv/models"
            raise ValueError(f"{value!r} is not {what}: {problem}; {valid}")
        return value


class Node(Strict):
    role: Role
    kind: NodeKind = NodeKind.VM
    cpu: Annotated[int, Field(ge=1, le=256)] = 2
    memory: Annotated[int, Field(ge=256, description="MiB")] = 2048
    disk: Annotated[int, Field(ge=4, description="GiB")] = 16
    vm_id: Annotated[int, Field(ge=100, le=999_999_999)] | None = None
    nics: list[Nic] = Field(min_length=1)
    gpu: Gpu | None = None
    mounts: list[Mount] = []
    tags: list[PveTag] = []
    engine: Engine = Field(
        default=Engine.LLAMA_CPP, description="inference nodes only: the model server"
    )


MODEL_SOURCES = (BUILTIN_PREFIX, FILE_PREFIX)


class LabModel(Strict):
    """A model the inference nodes serve: where it comes from and its pinned sha256."""

    source: str = Field(
        description="builtin:<name> (a model mlseclab produces offline) or file:/path.gguf"
    )
    sha256: str = Field(description="sha256 of the model file; nothing else is served")
    task: Literal["completion", "chat", "embedding"]
    dataset: str = Field(default="models", description="dataset the file is placed in")
    description: FreeText = ""

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"{value!r} is not a sha256; write 64 lowercase hex digits")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.startswith(MODEL_SOURCES):
            raise ValueError(
                f"{value!r} is not a model source; use builtin:<name> or file:/absolute/path.gguf"
            )
        if value.startswith("file:"):
            path = value.removeprefix("file:")
            if path.lower().endswith(PICKLE_SUFFIXES):
                raise ValueError(
                    f"{path} is a pickle format, which can run code when loaded; "
                    "convert it to GGUF (or safetensors) first"
                )
            valid = (
                "give an absolute path to a .gguf file, or to a safetensors "
                "model directory ending in / (engine vllm)"
            )
            if not path.startswith("/") or not path.endswith((".gguf", "/")) or path == "/":
                raise ValueError(f"{path!r}: {valid}")
            valid = f"give an absolute path like file:/srv/import/model.gguf ({PATH_CHARS})"
            if path.endswith("/"):
                valid = f"give an absolute path like file:/srv/import/model/ ({PATH_CHARS})"
            what = "a model file or directory"
            directory = path.endswith("/")
            safe_absolute_path(
                path, what=what, valid=valid, max_len=MODEL_PATH_MAX, directory=directory
            )
            problem = system_path_problem(path)
            if problem:
                raise ValueError(f"{path!r} is not {what}: {problem}; {valid}")
        return value

    @property
    def engine(self) -> Engine:
        """The engine that loads this model's format: a directory (safetensors) needs vLLM."""
        return Engine.VLLM if self.source.endswith("/") else Engine.LLAMA_CPP


class Flow(Strict):
    name: FlowName | None = None
    from_: str = Field(alias="from")
    to: str
    port: Annotated[int, Field(ge=1, le=65535)]
    proto: Literal["tcp", "udp"] = "tcp"
    network: str | None = Field(
        default=None, description="segment the flow uses (default: service)"
    )
    description: FreeText = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def label(self) -> str:
        return self.name or f"{self.from_}->{self.to}:{self.port}/{self.proto}"


class Waiver(Strict):
    control: str
    nodes: list[str] = Field(default_factory=lambda: [ALL])
    reason: Annotated[str, AfterValidator(lambda v: ab.free_text(v, 500))] = Field(min_length=10)
    expires: dt.date | None = Field(
        default=None, description="YYYY-MM-DD: the last day it applies (default: no end)"
    )

    @field_validator("expires", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        """A real date only: YAML 2027-01-31 (a date already) or the same text quoted."""
        if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            with contextlib.suppress(ValueError):
                return dt.date.fromisoformat(value)
        shown = repr(value) if isinstance(value, str) else str(value)
        raise ValueError(
            f"{shown} is not a date; write it as YYYY-MM-DD (e.g. 2027-01-31), "
            "or leave expires out for a waiver without an end"
        )

    @field_validator("control")
    @classmethod
    def _ctl(cls, value: str) -> str:
        if not CONTROL_ID.match(value):
            raise ValueError(f"{value!r} is not a control id, e.g. MLSL-OS-02")
        return value

    def expired(self, today: dt.date) -> bool:
        """Past its ``expires`` day (the day itself still applies)."""
        return self.expires is not None and self.expires < today

    def covers(self, control: str, node: str) -> bool:
        """It names ``control`` and ``node`` (or every node)."""
        return control == self.control and (ALL in self.nodes or node in self.nodes)


class Posture(Strict):
    profile: Literal["baseline", "strict"] = "baseline"
    waivers: list[Waiver] = []


class LabSpec(Strict):
    lab: LabSettings
    networks: dict[str, Segment] = Field(min_length=1)
    datasets: dict[str, Dataset] = {}
    nodes: dict[str, Node] = Field(min_length=1)
    flows: list[Flow] = []
    models: dict[str, LabModel] = {}
    posture: Posture = Posture()

    # -- lookups used across the code base --------------------------------
    def mounts_of(self, dataset: str, *, writers_only: bool = False) -> tuple[str, ...]:
        """The nodes that mount ``dataset`` (read-write only, with ``writers_only``)."""
        return tuple(
            name
            for name, node in self.nodes.items()
            if any(
                m.dataset == dataset and (m.mode == "rw" or not writers_only) for m in node.mounts
            )
        )

    def mgmt_segment_name(self) -> str:
        return next(n for n, s in self.networks.items() if s.purpose is Purpose.MGMT)

    def nodes_by_role(self) -> dict[Role, list[str]]:
        out: dict[Role, list[str]] = {}
        for name, node in self.nodes.items():
            out.setdefault(node.role, []).append(name)
        return out


# ---------------------------------------------------------------------------
# Whole-lab rules
# ---------------------------------------------------------------------------


def _suggest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _one_of(choices: Iterable[str]) -> str:
    items = sorted(c if _PLAIN_KEY.fullmatch(c) else repr(c) for c in set(choices))
    return ", ".join(items) if items else "(none declared)"


def check_rules(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    """Yield (path, message) for every whole-lab rule the spec breaks."""
    yield from _check_networks(spec)
    yield from _check_nodes(spec)
    yield from _check_flows(spec)
    yield from _check_models(spec)
    yield from _check_engines(spec)
    yield from _check_posture(spec)
    if spec.lab.target == "proxmox" and spec.lab.proxmox is None:
        yield (
            ("lab", "target"),
            "target proxmox needs a lab.proxmox section (endpoint, nodes, template)",
        )


#: The uplink is a point-to-point transit link: exactly two host addresses.
UPLINK_PREFIX = 30
#: The largest segment: /16 (65534 hosts) is far more than a lab has nodes. A shorter prefix
#: only widens what the host routes into the lab (a /1 would capture half of IPv4).
MAX_SEGMENT_PREFIX = 16


def _check_networks(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    seen_vlan: dict[int, str] = {}
    items = list(spec.networks.items())
    for name, seg in items:
        if not SEGMENT_NAME.match(name):
            yield (
                ("networks", name),
                (
                    f"{name!r} is not a segment name; use 1-12 lowercase letters, digits and "
                    "'-', starting with a letter (its bridge br-<name> is an interface name of "
                    "at most 15 characters), e.g. inference"
                ),
            )
        if seg.vlan in seen_vlan:
            yield (
                ("networks", name, "vlan"),
                (
                    f"VLAN id {seg.vlan} is already used by network {seen_vlan[seg.vlan]}; "
                    "each segment needs its own VLAN id"
                ),
            )
        seen_vlan.setdefault(seg.vlan, name)
        if seg.network.prefixlen > 29:
            yield (
                ("networks", name, "cidr"),
                (f"{seg.cidr} is too small for a segment; use a prefix of /29 or shorter"),
            )
        elif seg.network.prefixlen < MAX_SEGMENT_PREFIX:
            yield (
                ("networks", name, "cidr"),
                (
                    f"{seg.cidr} is too large for a segment; use a prefix of "
                    f"/{MAX_SEGMENT_PREFIX} or longer (up to 65534 hosts), "
                    f"e.g. {seg.network.network_address}/{MAX_SEGMENT_PREFIX}"
                ),
            )
        if seg.gateway is not None:
            gw = ipaddress.IPv4Address(seg.gateway)
            if gw not in seg.network or gw in (
                seg.network.network_address,
                seg.network.broadcast_address,
            ):
                yield (
                    ("networks", name, "gateway"),
                    (
                        f"{seg.gateway} is not a host address of {name} ({seg.cidr}); "
                        "use one inside it, or leave gateway out (the first host)"
                    ),
                )
    for i, (name_a, seg_a) in enumerate(items):
        for name_b, seg_b in items[i + 1 :]:
            if seg_a.network.overlaps(seg_b.network):
                yield (
                    ("networks", name_b, "cidr"),
                    (
                        f"{seg_b.cidr} overlaps network {name_a} ({seg_a.cidr}); "
                        "segments need disjoint CIDRs"
                    ),
                )
    uplink = ipaddress.IPv4Network(spec.lab.local.uplink_cidr)
    if uplink.prefixlen != UPLINK_PREFIX:
        transit = ipaddress.IPv4Network((uplink.network_address, UPLINK_PREFIX), strict=False)
        yield (
            ("lab", "local", "uplink_cidr"),
            (
                f"{uplink} is a /{uplink.prefixlen}, but the uplink is a transit link with "
                f"exactly two host addresses (the host and the router); "
                f"use a /{UPLINK_PREFIX}, e.g. {transit}"
            ),
        )
    for name, seg in items if uplink.prefixlen == UPLINK_PREFIX else ():
        if uplink.overlaps(seg.network):
            yield (
                ("lab", "local", "uplink_cidr"),
                (
                    f"{uplink} overlaps network {name} ({seg.cidr}); "
                    "choose a transit /30 outside the lab"
                ),
            )
    mgmt = [n for n, s in items if s.purpose is Purpose.MGMT]
    if len(mgmt) != 1:
        yield (
            ("networks",),
            (
                f"the lab needs exactly one network with purpose mgmt, found {len(mgmt)}"
                + (f" ({', '.join(mgmt)}); keep purpose mgmt on one" if mgmt else "; add one")
            ),
        )


def _check_nodes(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    seen_ip: dict[ipaddress.IPv4Address, str] = {}
    seen_vmid: dict[int, str] = {}
    mgmt_names = {n for n, s in spec.networks.items() if s.purpose is Purpose.MGMT}
    for name, node in spec.nodes.items():
        base: Path = ("nodes", name)
        if not DNS_LABEL.match(name):
            yield (
                base,
                (
                    f"{name!r} is not a node name; "
                    "use lowercase letters, digits and '-' (a DNS label)"
                ),
            )
        if name in SPECIAL_SOURCES or name in {r.value for r in Role}:
            yield base, f"{name!r} is reserved (a role or a flow keyword); choose another node name"
        fqdn = f"{name}.{spec.lab.domain}"
        if len(fqdn) > CERT_NAME_MAX:
            yield (
                base,
                (
                    f"{fqdn} is {len(fqdn)} characters, over the {CERT_NAME_MAX} a certificate's "
                    "common name holds; shorten the node name or lab.domain"
                ),
            )
        machine = f"{spec.lab.name}-{name}"
        if len(machine) > MACHINE_NAME_MAX:
            yield (
                base,
                (
                    f"the node's machine name {machine} is {len(machine)} characters, over the "
                    f"{MACHINE_NAME_MAX} systemd allows; shorten the node or lab name"
                ),
            )
        if node.vm_id is not None:
            if node.vm_id in seen_vmid:
                yield (
                    (*base, "vm_id"),
                    f"vm_id {node.vm_id} is already used by {seen_vmid[node.vm_id]}; "
                    "give each node its own vm_id",
                )
            seen_vmid.setdefault(node.vm_id, name)
        nets_seen: set[str] = set()
        for i, nic in enumerate(node.nics):
            where: Path = (*base, "nics", i)
            seg = spec.networks.get(nic.network)
            if seg is None:
                yield (
                    (*where, "network"),
                    (
                        f"unknown network {nic.network!r}; declared: {_one_of(spec.networks)}"
                        + _suggest(nic.network, spec.networks)
                    ),
                )
                continue
            if nic.network in nets_seen:
                yield (*where, "network"), f"{name} has two NICs on {nic.network}; give it one"
            nets_seen.add(nic.network)
            addr = ipaddress.IPv4Address(nic.ip)
            net = seg.network
            if addr not in net:
                yield (
                    (*where, "ip"),
                    f"{nic.ip} is outside network {nic.network} ({seg.cidr}); use one inside it",
                )
                continue
            which = "network" if addr == net.network_address else "broadcast"
            if addr in (net.network_address, net.broadcast_address):
                yield (
                    (*where, "ip"),
                    (
                        f"{nic.ip} is the {which} address of {nic.network} ({seg.cidr}); "
                        "use a host address"
                    ),
                )
            elif addr == seg.gateway_address:
                yield (
                    (*where, "ip"),
                    (f"{nic.ip} is the gateway of {nic.network}; the router owns it, use another"),
                )
            elif addr in seen_ip:
                yield (
                    (*where, "ip"),
                    f"{nic.ip} is already used by {seen_ip[addr]}; give each NIC its own address",
                )
            seen_ip.setdefault(addr, f"{name}.nics[{i}]")
        if mgmt_names and not nets_seen & mgmt_names:
            yield (
                (*base, "nics"),
                (
                    f"{name} has no NIC on the mgmt network ({_one_of(mgmt_names)}); "
                    "every node is managed over mgmt, add one"
                ),
            )
        if node.gpu is not None and node.kind is not NodeKind.VM:
            yield (
                (*base, "gpu"),
                (f"a GPU needs a VM: {name} is a container; set kind: vm or remove gpu"),
            )
        if "engine" in node.model_fields_set and node.role is not Role.INFERENCE:
            yield (
                (*base, "engine"),
                f"engine applies to inference nodes only: {name} is a {node.role}; remove engine",
            )
        elif node.engine is Engine.VLLM and (node.kind is not NodeKind.VM or node.gpu is None):
            what = "is a container" if node.kind is not NodeKind.VM else "has no gpu"
            yield (
                (*base, "engine"),
                (
                    f"engine vllm needs a VM with an NVIDIA GPU: {name} {what}; "
                    "set kind: vm and a gpu mapping, or use engine llama_cpp"
                ),
            )
        paths: set[str] = set()
        for i, mount in enumerate(node.mounts):
            where = (*base, "mounts", i)
            if mount.dataset not in spec.datasets:
                yield (
                    (*where, "dataset"),
                    (
                        f"undeclared dataset {mount.dataset!r}; declared: {_one_of(spec.datasets)}"
                        + _suggest(mount.dataset, spec.datasets)
                    ),
                )
            if mount.path in paths:
                yield (
                    (*where, "path"),
                    f"{mount.path} is mounted twice on {name}; give each mount its own path",
                )
            paths.add(mount.path)
    for name in spec.datasets:
        if not DNS_LABEL.match(name):
            yield ("datasets", name), f"{name!r} is not a dataset name; use a DNS label"


def endpoint_choices(spec: LabSpec, *, source: bool) -> set[str]:
    roles = {n.role.value for n in spec.nodes.values()}
    return roles | set(spec.nodes) | set(SPECIAL_SOURCES if source else SPECIAL_DESTINATIONS)


def _check_flows(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    declared_roles = {r.value for r in Role}
    for i, flow in enumerate(spec.flows):
        base: Path = ("flows", i)
        for key, value, source in (("from", flow.from_, True), ("to", flow.to, False)):
            valid = endpoint_choices(spec, source=source)
            if value in valid:
                continue
            if value in declared_roles:
                what = f"flow to role {value!r}, which no node has"
            elif value in SPECIAL_SOURCES:
                what = f"{value!r} can only be a source"
            else:
                what = f"unknown role or node {value!r}"
            yield (*base, key), f"{what}; valid: {_one_of(valid)}" + _suggest(value, valid)
        if flow.name is None and not ab.NFT_COMMENT.fullmatch(flow.label):
            yield (
                base,
                (
                    f"the flow's label {flow.label} is {len(flow.label)} characters, over the "
                    f"{ab.FLOW_LABEL_MAX} a firewall comment holds; give the flow a name"
                ),
            )
        if flow.network is not None and flow.network not in spec.networks:
            yield (
                (*base, "network"),
                (
                    f"unknown network {flow.network!r}; declared: {_one_of(spec.networks)}"
                    + _suggest(flow.network, spec.networks)
                ),
            )


def _check_models(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    for name, model in spec.models.items():
        base: Path = ("models", name)
        if not ab.MODEL_NAME.fullmatch(name):
            yield (
                base,
                (
                    f"{ab.shown(name)} is not a model name; use up to 64 letters, digits, '.', "
                    "'_' and '-', starting and ending with a letter or digit, e.g. gemma-3-270m"
                ),
            )
        if model.dataset not in spec.datasets:
            yield (
                (*base, "dataset"),
                (
                    f"undeclared dataset {model.dataset!r}; declared: {_one_of(spec.datasets)}"
                    + _suggest(model.dataset, spec.datasets)
                ),
            )
        if model.source.startswith("builtin:"):
            builtin = model.source.removeprefix("builtin:")
            if builtin not in BUILTIN_SHA256:
                yield (
                    (*base, "source"),
                    (
                        f"unknown built-in model {builtin!r}; built-in: {_one_of(BUILTIN_SHA256)}"
                        + _suggest(builtin, BUILTIN_SHA256)
                    ),
                )
            elif BUILTIN_SHA256[builtin] != model.sha256:
                yield (
                    (*base, "sha256"),
                    (
                        f"does not match the pinned sha256 of builtin:{builtin} "
                        f"({BUILTIN_SHA256[builtin]}); a different file is a different model"
                    ),
                )
    if spec.models:
        serving = [n for n, node in spec.nodes.items() if node.role is Role.INFERENCE]
        for name, model in spec.models.items():
            mounting = spec.mounts_of(model.dataset)
            for node in serving:
                if node not in mounting:
                    yield (
                        ("nodes", node, "mounts"),
                        (
                            f"{node} serves model {name} but does not mount dataset "
                            f"{model.dataset}; add {{dataset: {model.dataset}, "
                            f"path: /srv/{model.dataset}, mode: ro}}"
                        ),
                    )


ENGINE_LOADS = {
    Engine.LLAMA_CPP: "GGUF files only (builtin:<name> or file:/path/model.gguf)",
    Engine.VLLM: "one safetensors model directory (file:/path/model/)",
}


def _check_engines(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    """Every inference node's engine loads the format of every model, and vLLM serves one."""
    for node_name, node in spec.nodes.items():
        if node.role is not Role.INFERENCE:
            continue
        for name, model in spec.models.items():
            if model.engine is not node.engine:
                yield (
                    ("models", name, "source"),
                    (
                        f"{node_name} serves with engine {node.engine}, which loads "
                        f"{ENGINE_LOADS[node.engine]}; set nodes.{node_name}.engine: "
                        f"{model.engine} or change the model"
                    ),
                )
        if node.engine is Engine.VLLM and len(spec.models) != 1:
            yield (
                ("nodes", node_name, "engine"),
                (
                    f"engine vllm serves one model per node and the spec declares "
                    f"{len(spec.models)}; declare one model or use engine llama_cpp"
                ),
            )


def _check_posture(spec: LabSpec) -> Iterator[tuple[Path, str]]:
    for i, waiver in enumerate(spec.posture.waivers):
        for j, node in enumerate(waiver.nodes):
            if node != ALL and node not in spec.nodes:
                yield (
                    ("posture", "waivers", i, "nodes", j),
                    (
                        f"unknown node {node!r}; declared: {_one_of(spec.nodes)}"
                        + _suggest(node, spec.nodes)
                    ),
                )


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

_TYPE_WORDS = {
    "int": "a whole number",
    "string": "a string",
    "bool": "true or false",
    "dict": "a mapping",
    "model": "a mapping",
    "list": "a list",
    "float": "a number",
    "date": "a date (YYYY-MM-DD)",
}


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model ``annotation`` holds directly (through Annotated and Optional), if any."""
    for member in _alternatives(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _alternatives(annotation: Any) -> list[Any]:
    """``annotation`` without Annotated and None: its members if it is a union, else itself."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _alternatives(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return [m for a in get_args(annotation) if a is not type(None) for m in _alternatives(a)]
    return [annotation]


def _walk_loc(loc: Iterable[str | int]) -> tuple[tuple[str | int, ...], Any]:
    """Follow a pydantic error location down the schema of :class:`LabSpec`.

    Returns the location without the union member tags pydantic inserts (a tag
    stands where the schema has a union of several types) and the annotation the
    location points at (None once it leaves the schema, e.g. under an unknown key).
    """
    clean: list[str | int] = []
    annotation: Any = LabSpec
    tagged = False
    for part in loc:
        members = _alternatives(annotation) if annotation is not None else []
        if len(members) > 1 and not tagged:  # this part names the member pydantic tried
            annotation = next((m for m in members if getattr(m, "__name__", "") == part), None)
            tagged = True
            continue
        tagged = False
        clean.append(part)
        if not members:
            continue
        inner = members[0]
        model = _inner_model(inner)
        if model is not None:
            field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
            annotation = field.annotation if field is not None else None
        elif get_origin(inner) in (dict, list) and get_args(inner):
            annotation = get_args(inner)[-1]
        else:
            annotation = None
    return tuple(clean), annotation


def _model_at(loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The pydantic model that the location ``loc`` points into, if any."""
    return _inner_model(_walk_loc(loc)[1])


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _describe(err: Any) -> str:
    """The message for one pydantic error: what is wrong; what would be valid."""
    kind: str = err["type"]
    shown = _shown(err.get("input"))
    loc = _clean_loc(tuple(err["loc"]))
    parent = _model_at(loc[:-1]) if loc else None
    key = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        if parent is None:
            return f"unknown key {key!r}; remove it (see inventories/reference/lab.yaml)"
        names = _field_names(parent)
        return f"unknown key {key!r}; valid keys here: {_one_of(names)}" + _suggest(key, names)
    if kind == "missing":
        field = parent.model_fields.get(key) if parent is not None else None
        what = f": {field.description}" if field is not None and field.description else ""
        return f"required key {key!r} is missing; add it{what}"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"{shown} is not allowed; valid: {expected}"
    if kind == "int_from_float":
        return f"expected a whole number, got {shown}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        word = kind.split("_", 1)[0]
        return f"expected {_TYPE_WORDS.get(word, word)}, got {shown}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return (
            f"{shown} is out of range; {err['msg'].lower().replace('input should be ', 'must be ')}"
        )
    if kind == "string_too_short":
        least = err.get("ctx", {}).get("min_length", 1)
        return f"{shown} is too short; write at least {least} characters"
    if kind in ("too_short", "too_long"):
        msg = str(err["msg"])
        return msg.replace("List", "this list").replace("Dictionary", "this mapping")
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return str(err["msg"])


def _dotted(loc: Iterable[str | int]) -> str:
    """``nodes.rag-01.nics[0].ip``; a key that is not a plain word is shown quoted, so a
    newline or markup in a key can never split or restyle the message line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not _PLAIN_KEY.fullmatch(text):
                text = repr(text)
            out += ("." if out else "") + text
    return out


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``loc`` without the union member names pydantic inserts (e.g. 'int', 'ProxmoxTemplate')."""
    return _walk_loc(loc)[0]


def parse_spec(text: str, file: str) -> LabSpec:
    """Parse and validate a spec; raise :class:`SpecError` listing every problem."""
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise SpecError(
            [
                SpecProblem(
                    file,
                    1,
                    "",
                    (
                        "the file is empty; a lab spec needs the keys lab, networks and nodes "
                        "(see inventories/reference/lab.yaml)"
                    ),
                )
            ]
        )
    try:
        located = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise SpecError([SpecProblem(file, exc.line, "", exc.message)]) from None
    return validate_data(located, file)


def validate_data(located: Located, file: str) -> LabSpec:
    problems: list[SpecProblem] = []
    for path, line, first in located.duplicates:
        what = "node name" if len(path) == 2 and path[0] == "nodes" else "key"
        problems.append(
            SpecProblem(
                file,
                line,
                _dotted(path),
                f"duplicate {what} {path[-1]!r} (first at line {first}); "
                f"each {what} must be unique",
            )
        )
    if not isinstance(located.data, dict):
        problems.append(
            SpecProblem(
                file,
                1,
                "",
                (
                    "expected a mapping with keys lab, networks, nodes; "
                    f"got {type(located.data).__name__}"
                ),
            )
        )
        raise SpecError(problems)
    try:
        spec = LabSpec.model_validate(located.data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            problems.append(SpecProblem(file, located.line_of(loc), _dotted(loc), _describe(err)))
        raise SpecError(sorted(problems, key=lambda p: p.line)) from None
    for path, message in check_rules(spec):
        problems.append(SpecProblem(file, located.line_of(path), _dotted(path), message))
    if problems:
        raise SpecError(sorted(problems, key=lambda p: p.line))
    return spec


#: The largest spec file read: the reference spec is 5 KB and a 200-node spec about 55 KB.
MAX_SPEC_BYTES = 1024 * 1024


def _refuse(file: str, message: str) -> SpecError:
    return SpecError([SpecProblem(file, 0, "", message)])


def _read_spec(p: FsPath) -> str:
    """The spec's text, read without blocking and without reading more than the cap.

    O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a terminal is
    never adopted. Only a regular file is read, and at most MAX_SPEC_BYTES + 1 bytes of
    it, so /dev/zero or a growing file cannot be read forever.
    """
    file = str(p)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise _refuse(
            file, "no such file; pass a lab spec such as inventories/reference/lab.yaml"
        ) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise _refuse(
            file,
            f"cannot read the spec: {exc.__class__.__name__}; pass a readable UTF-8 YAML file",
        ) from None
    except OSError as exc:  # a socket (ENXIO), a loop of symlinks, a name too long, ...
        raise _refuse(
            file,
            f"cannot read the spec: {exc.strerror or exc.__class__.__name__}; "
            "pass a readable UTF-8 YAML file",
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _refuse(
                file, "cannot read the spec: IsADirectoryError; pass a readable UTF-8 YAML file"
            )
        if not stat.S_ISREG(mode):
            raise _refuse(
                file,
                f"is not a regular file (it is {_file_kind(mode)}); "
                "pass a lab spec file such as inventories/reference/lab.yaml",
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SPEC_BYTES:
            chunk = os.read(fd, MAX_SPEC_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _refuse(
            file,
            f"cannot read the spec: {exc.strerror or exc.__class__.__name__}; "
            "pass a readable UTF-8 YAML file",
        ) from None
    finally:
        os.close(fd)
    if size > MAX_SPEC_BYTES:
        raise _refuse(
            file,
            f"the spec is larger than {MAX_SPEC_BYTES // 1024} KiB; a lab spec is a few KB "
            "(200 nodes fit in about 55 KB): pass the lab's spec, not another file",
        )
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(
            file, "cannot read the spec: UnicodeDecodeError; pass a readable UTF-8 YAML file"
        ) from None


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


def load_spec(path: str | FsPath) -> LabSpec:
    """Read and validate the spec at ``path``; raise :class:`SpecError` on any problem."""
    p = FsPath(path)
    return parse_spec(_read_spec(p), str(p))
