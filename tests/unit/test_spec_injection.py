"""A spec that validates never opens a firewall, runs a command or rewrites a config.

Every string field of the spec is fed hostile text (quotes, newlines, Jinja, ``;``,
``$()``, backticks, rich markup, ssh tokens, non-ASCII and format characters). Either
``parse_spec`` refuses it with a spec error, or every artifact rendered from the spec
parses in its own language and holds the value only as data:

- the router ruleset and every node's ruleset pass ``nft -c`` in a scratch network
  namespace, with exactly one accept per resolved flow;
- the inventory, read back, holds the value unchanged, and Ansible itself, templating
  every variable the roles read, returns it unchanged and runs nothing;
- ssh_config, /etc/hosts, resolv.conf and nginx's server_name keep their line and
  token structure;
- a client's name and groups, which become a key file name, nginx map entries (quoted),
  the gateway's signed principal (``client|groups|ts``, split on ``|`` and ``,``) and SQL
  array elements in the database's check, hold only the DNS-label alphabet.

A second test goes past the schema on purpose (the first wall) to prove the second:
a Jinja lookup in each string that reaches the inventory is never evaluated.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.labs import REFERENCE, ROOT
from mlseclab.errors import SpecError
from mlseclab.inventory import parse_inventory, render_inventory, render_ssh_config
from mlseclab.secrets import paths
from mlseclab.spec import LabSpec, parse_spec
from mlseclab.state import LabHome
from mlseclab.targets.local.nodes import hosts_file, resolv_conf
from mlseclab.targets.local.target import LocalTarget
from mlseclab.topology import Topology, derive

pytestmark = pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("unshare") is None,
    reason="needs nft and unshare (scripts/bootstrap.sh installs nftables)",
)

SENTINEL = Path("/tmp/mlseclab-injection-sentinel")
FIREWALL_ROLE = ROOT / "roles" / "firewall"
BIN = Path(sys.executable).parent

#: Where a string sits in the reference spec. ("key", path) renames a mapping key.
FIELDS: list[tuple[str, tuple[Any, ...]]] = [
    ("value", ("lab", "name")),
    ("value", ("lab", "domain")),
    ("value", ("lab", "local", "datasets_root")),
    ("value", ("lab", "local", "uplink_cidr")),
    ("value", ("lab", "proxmox", "endpoint")),
    ("value", ("lab", "proxmox", "nodes", 0)),
    ("value", ("lab", "proxmox", "template", "tag")),
    ("value", ("lab", "proxmox", "datastore")),
    ("value", ("lab", "proxmox", "lab_bridge")),
    ("value", ("lab", "proxmox", "mgmt_bridge")),
    ("value", ("lab", "proxmox", "sdn_zone")),
    ("value", ("lab", "proxmox", "pool")),
    ("key", ("networks", "app")),
    ("value", ("networks", "app", "gateway")),
    ("key", ("datasets", "corpora")),
    ("value", ("datasets", "models", "description")),
    ("key", ("nodes", "rag-01")),
    ("value", ("nodes", "rag-01", "nics", 1, "network")),
    ("value", ("nodes", "rag-01", "nics", 1, "ip")),
    ("value", ("nodes", "rag-01", "nics", 1, "mac")),
    ("value", ("nodes", "inference-01", "gpu", "mapping")),
    ("value", ("nodes", "rag-01", "mounts", 0, "path")),
    ("value", ("nodes", "rag-01", "mounts", 0, "dataset")),
    ("value", ("nodes", "rag-01", "tags", 0)),
    ("value", ("flows", 1, "name")),
    ("value", ("flows", 1, "description")),
    ("value", ("flows", 1, "from")),
    ("value", ("flows", 1, "to")),
    ("value", ("flows", 1, "network")),
    ("key", ("models", "gemma-3-270m")),
    ("value", ("models", "gemma-3-270m", "source")),
    ("value", ("models", "gemma-3-270m", "description")),
    ("key", ("clients", "rag-app")),
    ("value", ("clients", "rag-app", "groups", 0)),
    ("value", ("posture", "waivers", 0, "control")),
    ("value", ("posture", "waivers", 0, "reason")),
    ("value", ("posture", "waivers", 0, "nodes", 0)),
]

LOOKUP = f"{{{{ lookup('pipe', 'touch {SENTINEL}') }}}}"
PIECES = [
    '"',
    "'",
    "\n",
    "\r",
    "\t",
    LOOKUP,
    "{% if true %}x{% endif %}",
    "{# c #}",
    ";",
    " accept",
    f"$(touch {SENTINEL})",
    f"`touch {SENTINEL}`",
    "[/]",
    "[bold]",
    ":100:",
    "%h",
    "\\",
    "#",
    " ",
    "/",
    ":",
    "..",
    "é",
    "\u202e",
    "\u200b",
    "ProxyCommand sh",
    "a",
    "b1",
    "-",
    ".",
]
hostile = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(max_size=2)), min_size=1, max_size=6
).map("".join)


def reference_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    data["lab"]["proxmox"]["template"]["tag"] = "debian-13"
    data["lab"]["proxmox"]["pool"] = "ml-lab"
    data["nodes"]["rag-01"]["tags"] = ["rag"]
    data["nodes"]["rag-01"]["nics"][1]["mac"] = "bc:24:11:00:00:01"
    data["flows"][1]["description"] = "the gateway calls the RAG service"
    data["models"]["gemma-3-270m"]["description"] = "a small completion model"
    data["posture"]["waivers"] = [
        {"control": "MLSL-OS-02", "reason": "a reason that is long enough", "nodes": ["rag-01"]}
    ]
    return data


BASE = reference_data()


def with_field(kind: str, path: tuple[Any, ...], value: str) -> str:
    data = copy.deepcopy(BASE)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if kind == "key":
        parent[value] = parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def nft_check(ruleset: str, tmp: Path, name: str) -> None:
    path = tmp / f"{name}.nft"
    path.write_text(ruleset, encoding="utf-8")
    run = subprocess.run(
        ["unshare", "-n", "nft", "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, f"{name}: nft -c refused the ruleset:\n{run.stderr}\n{ruleset}"


def node_ruleset(host: dict[str, Any]) -> str:
    """The firewall role's template, as Ansible renders it from the inventory's rules."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(FIREWALL_ROLE / "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        autoescape=False,  # noqa: S701 - an nftables file, not HTML
    )
    env.filters["comment"] = lambda text: "\n".join(f"# {line}" for line in text.splitlines())
    return env.get_template("etc/nftables.conf.j2").render(
        ansible_managed="Ansible managed",
        firewall_table="mlseclab_node",
        firewall_forward_policy="drop",
        firewall_probe_uid=65534,
        firewall_ingress_rules=host["mlseclab_ingress"],
        firewall_egress_rules=host["mlseclab_egress"],
        firewall_node_addresses=[nic["ip"] for nic in host["mlseclab_nics"]],
    )


def accept_count(ruleset: str) -> int:
    return len(re.findall(r"\bct state new counter accept comment ", ruleset))


def strings_in(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(strings_in(k) | strings_in(v) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(strings_in(v) for v in value)) if value else set()
    return set()


def assert_inert(spec: LabSpec, value: str, tmp: Path) -> None:
    topo: Topology = derive(spec)
    home = LabHome(spec.lab.name, tmp / "state")
    router = LocalTarget(spec, topo, home).router_ruleset()
    nft_check(router, tmp, "router")
    # one accept per resolved flow, and the observability node's scrape of the router's
    # own drop counters (input chain, from the observability nodes' mgmt addresses only)
    scrape = re.findall(r'.*comment "metrics-scrape -> router"', router)
    observers = sorted(n.mgmt.ip for n in topo.nodes.values() if n.role == "observability")
    assert len(scrape) == (1 if observers else 0), scrape
    if observers:
        assert f"ip saddr {{ {', '.join(observers)} }} ip daddr" in scrape[0], scrape[0]
    assert accept_count(router) == len(topo.rules) + len(scrape)

    inventory = parse_inventory(render_inventory(topo, home, "container", "local"))
    hosts = {
        name: host_vars
        for group in inventory["all"]["children"].values()
        for name, host_vars in (group.get("hosts") or {}).items()
        if host_vars
    }
    assert set(hosts) == set(spec.nodes)
    for name, host_vars in hosts.items():
        ruleset = node_ruleset(host_vars)
        nft_check(ruleset, tmp, name)
        assert accept_count(ruleset) == len(host_vars["mlseclab_ingress"]) + len(
            host_vars["mlseclab_egress"]
        )

    ssh = render_ssh_config(topo, home)
    hosts_lines = [ln for ln in ssh.splitlines() if ln.startswith("Host ")]
    assert len(hosts_lines) == len(spec.nodes)
    for line in ssh.splitlines():
        assert line == "" or line.startswith(("#", "Host ", "    ")), line
    for node in spec.nodes:
        assert hosts_file(node, spec.lab.domain).count("\n") == 2
        assert re.fullmatch(r"[a-z0-9.-]+", f"{node}.{spec.lab.domain}")  # server_name token
    assert resolv_conf(spec.lab.domain).count("\n") == 2
    secrets = paths(home)
    for name, client in spec.clients.items():
        for token in (name, *client.groups):
            assert re.fullmatch(r"[a-z][a-z0-9-]*", token), token  # inert in nginx, SQL, '|'
        assert secrets.client_key(name).parent == secrets.root / "clients"
    assert not SENTINEL.exists()


@pytest.fixture(autouse=True)
def _no_sentinel() -> Any:
    SENTINEL.unlink(missing_ok=True)
    yield
    assert not SENTINEL.exists(), "a spec string ran a command"


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(field=st.sampled_from(FIELDS), value=hostile)
def test_a_hostile_string_is_refused_or_rendered_as_inert_data(
    field: tuple[str, tuple[Any, ...]], value: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    kind, path = field
    text = with_field(kind, path, value)
    try:
        spec = parse_spec(text, "lab.yaml")
    except SpecError as exc:
        assert exc.problems, "a spec error names at least one problem"
        for problem in exc.problems:
            assert "\n" not in str(problem) and "\r" not in str(problem)
        return
    assert_inert(spec, value, tmp_path_factory.mktemp("inert"))


@pytest.mark.parametrize(("kind", "path"), FIELDS, ids=lambda p: str(p))
def test_a_lookup_in_any_field_is_refused_or_inert(
    kind: str, path: tuple[Any, ...], tmp_path: Path
) -> None:
    """The same, deterministic: the lookup payload in every field."""
    for value in (LOOKUP, f"x{LOOKUP}", f'a" accept; #{LOOKUP}'):
        try:
            spec = parse_spec(with_field(kind, path, value), "lab.yaml")
        except SpecError:
            continue
        assert_inert(spec, value, tmp_path)


def test_the_valid_base_spec_renders(tmp_path: Path) -> None:
    """The base the hostile values go into is itself valid, so a refusal is the value's."""
    spec = parse_spec(yaml.safe_dump(BASE, sort_keys=False), "lab.yaml")
    assert_inert(spec, "", tmp_path)


def _past_the_schema(spec: LabSpec, payload: str) -> tuple[LabSpec, set[str]]:
    """The spec with ``payload`` in every string that reaches the inventory as a value,
    set without validation (``model_copy``), so only the inventory's own wall is left."""
    lab = spec.lab.model_copy(update={"domain": f"{payload}.internal"})
    datasets = {
        name: ds.model_copy(update={"description": f"{payload} {name}"})
        for name, ds in spec.datasets.items()
    }
    flows = [f.model_copy(update={"name": f"{payload}{i}"}) for i, f in enumerate(spec.flows)]
    models = {f"{payload}{name}": m for name, m in spec.models.items()}
    nodes = {
        name: n.model_copy(
            update={"mounts": [m.model_copy(update={"path": f"/srv/{payload}"}) for m in n.mounts]}
        )
        for name, n in spec.nodes.items()
    }
    hostile_spec = spec.model_copy(
        update={"lab": lab, "datasets": datasets, "flows": flows, "models": models, "nodes": nodes}
    )
    planted = {
        lab.domain,
        *(d.description for d in datasets.values()),
        *(f.name or "" for f in flows),
        *models,
        *(m.path for n in nodes.values() for m in n.mounts),
    }
    return hostile_spec, planted


def test_ansible_never_evaluates_a_spec_string_even_past_the_schema(tmp_path: Path) -> None:
    spec = parse_spec(REFERENCE.read_text(encoding="utf-8"), str(REFERENCE))
    hostile_spec, planted = _past_the_schema(spec, LOOKUP)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        render_inventory(
            derive(hostile_spec), LabHome("reference", tmp_path), "container", "local"
        ),
        encoding="utf-8",
    )
    out = tmp_path / "vars"
    out.mkdir()
    # Every variable the roles read from the inventory, templated by Ansible as a role
    # template would (to_json inside "{{ }}"), written per host.
    wanted = [
        "mlseclab_domain",
        "mlseclab_datasets",
        "mlseclab_models",
        "mlseclab_ingress",
        "mlseclab_egress",
        "mlseclab_mounts",
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Template every inventory variable",
                    "hosts": "gateway,inference,vectordb,rag,observability",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": sys.executable},
                    "tasks": [
                        {
                            "name": "Write the templated variables",
                            "ansible.builtin.copy": {
                                "dest": f"{out}/{{{{ inventory_hostname }}}}.json",
                                "content": "{{ {"
                                + ", ".join(f"'{v}': {v}" for v in wanted)
                                + ", 'server_name': inventory_hostname ~ '.' ~ mlseclab_domain"
                                + "} | to_json }}",
                                "mode": "0600",
                            },
                        }
                    ],
                }
            ]
        ),
        encoding="utf-8",
    )
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert not SENTINEL.exists(), "Ansible ran a lookup from the inventory"
    seen: set[str] = set()
    for path in sorted(out.glob("*.json")):
        seen |= strings_in(json.loads(path.read_text(encoding="utf-8")))
    assert len(list(out.glob("*.json"))) == len(spec.nodes)
    # each planted string came out exactly as it went in: data, never a template
    assert planted <= seen, sorted(planted - seen)
    assert f"gateway-01.{LOOKUP}.internal" in seen
