"""The lab spec's schema: the pydantic models and the constants the code base shares.

A spec is checked in two passes. pydantic checks each field on its own (types,
ranges, unknown keys) against these models; :func:`mlseclab.spec.rules.check_rules`
then checks what only the whole lab can tell (overlapping networks, addresses outside
their network, flows to roles that have no node). Both passes report every problem
they find, each with the file, the line, the dotted path and what would be valid
(:mod:`mlseclab.spec.messages`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from mlseclab import alphabets as ab
from mlseclab.ml.catalog import BUILTIN_PREFIX, FILE_PREFIX, PICKLE_SUFFIXES

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
PveSdnZone = Annotated[
    str,
    _checked(
        ab.PVE_SDN_ZONE,
        "a Proxmox SDN zone id",
        "2-4 letters and digits, starting with a letter (each vnet id is the zone id and a "
        "4-digit VLAN id, and Proxmox allows 8 characters)",
        "mlsl",
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
    sdn_zone: PveSdnZone | None = Field(
        default=None,
        description="SDN VLAN zone id when network_mode is sdn (default: from the lab name)",
    )
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


GroupName = Annotated[
    str,
    _checked(ab.DNS_LABEL, "a group name", "up to 63 lowercase letters, digits and '-'", "secops"),
]


class Client(Strict):
    """A gateway client: an API key (generated), its groups and what it may call."""

    groups: list[GroupName] = Field(
        default=[], max_length=16, description="RAG documents of these groups are readable"
    )
    rate_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 120
    embeddings: bool = Field(default=False, description="may call /v1/embeddings directly")


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
    clients: dict[str, Client] = {}
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
