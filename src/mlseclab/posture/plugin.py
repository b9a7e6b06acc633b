"""The pytest plugin behind ``mlseclab verify``: lab nodes as parameters, control ids as results.

Loaded with ``-p mlseclab.posture.plugin``. The checks in ``tests/posture/`` are
plain pytest functions that take these fixtures:

``node``
    a :class:`PostureNode` (name, role, kind, the derived topology node). A test
    that takes ``node`` is run once per lab node, restricted with
    ``@pytest.mark.roles("inference", ...)``; ``--mlseclab-node`` narrows further.
``host``
    the testinfra host of ``node``, over the lab's SSH config (connection reuse
    through its ControlMaster), commands run with sudo.
``lab``
    the :class:`PostureLab`: spec, topology, state directory.

Each check names the controls it proves with one marker::

    @pytest.mark.control("MLSL-SSH-03", cis="5.1.20", devsec="sshd-07")

A control a container node cannot have is reported with :func:`not_applicable`,
which is never counted as passed. The outcome of every check lands in the file
``--mlseclab-results`` names (JSON), with its node, control ids, waiver and
evidence; :mod:`mlseclab.posture.report` turns that into reports.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlseclab.posture import waiver_for
from mlseclab.posture.results import WAIVABLE, CheckResult, Outcome
from mlseclab.spec import LabSpec, load_spec
from mlseclab.topology import LabNode, Topology, derive

NA_PREFIX = "not applicable: "
FRAMEWORKS = ("cis", "devsec", "owasp", "atlas")
LAB_SCOPE = "lab"  # the node name of checks that belong to no node (the operator's view)


def not_applicable(reason: str) -> None:
    """End this check as "not applicable" with ``reason``: reported by control id, never a pass."""
    pytest.skip(NA_PREFIX + reason)


@dataclass(frozen=True)
class PostureNode:
    name: str
    role: str
    kind: str  # the spec's kind: vm or container
    topo: LabNode
    runs_as_container: bool  # what up made it (the inventory's mlseclab_kind): container or VM

    def __str__(self) -> str:
        return self.name


@dataclass
class PostureLab:
    spec_path: Path
    spec: LabSpec
    topology: Topology
    state: Path  # .mlseclab/<lab>

    @property
    def ssh_config(self) -> Path:
        return self.state / "ssh_config"

    @property
    def inventory(self) -> Path:
        return self.state / "inventory.yml"

    @functools.cached_property
    def runtime_kinds(self) -> dict[str, str]:
        """Each node's ``mlseclab_kind`` (container or vm) from the inventory ``up`` wrote:
        where the lab runs is what up did, not what the spec's ``lab.target`` says.

        Empty when there is no inventory (the suite collected without a lab): each node is
        then what the spec's ``kind`` says.
        """
        from mlseclab.inventory import parse_inventory

        try:
            doc = parse_inventory(self.inventory.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        kinds: dict[str, str] = {}
        for group in (doc or {}).get("all", {}).get("children", {}).values():
            for host, hostvars in ((group or {}).get("hosts") or {}).items():
                if isinstance(hostvars, dict) and "mlseclab_kind" in hostvars:
                    kinds[host] = str(hostvars["mlseclab_kind"])
        return kinds

    def nodes(self) -> list[PostureNode]:
        kinds = self.runtime_kinds
        return [
            PostureNode(
                name=name,
                role=n.role,
                kind=n.kind.value,
                topo=self.topology.nodes[name],
                runs_as_container=kinds.get(name, n.kind.value) == "container",
            )
            for name, n in self.spec.nodes.items()
        ]


@dataclass
class _Session:
    lab: PostureLab
    only: set[str]
    results_path: Path | None
    lab_scope_only: bool = False
    results: dict[str, CheckResult] = field(default_factory=dict)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlseclab", "mlseclab posture")
    group.addoption("--mlseclab-spec", help="the lab spec (lab.yaml)")
    group.addoption("--mlseclab-state", help="the lab's state directory (.mlseclab/<lab>)")
    group.addoption(
        "--mlseclab-node", action="append", default=[], help="check only this node (repeatable)"
    )
    group.addoption(
        "--mlseclab-lab-scope",
        action="store_true",
        help="run only the checks that belong to the lab, not to a node",
    )
    group.addoption("--mlseclab-results", help="write the check results (JSON) here")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "roles(*roles): the node roles a check applies to")
    config.addinivalue_line("markers", "control(id, **frameworks): the control ids a check proves")
    spec_opt = config.getoption("mlseclab_spec", None)
    if not spec_opt:
        return
    if config.pluginmanager.has_plugin("pytest11.testinfra"):
        # testinfra's own `host` fixture (the LOCAL machine by default) would shadow ours
        raise pytest.UsageError("run the posture checks with -p no:pytest11.testinfra")
    spec_path = Path(spec_opt)
    spec = load_spec(spec_path)
    state_opt = config.getoption("mlseclab_state", None)
    if state_opt:
        state = Path(state_opt)
    else:
        from mlseclab.state import LabHome

        state = LabHome.for_lab(spec.lab.name).root
    lab = PostureLab(spec_path=spec_path, spec=spec, topology=derive(spec), state=state)
    results = config.getoption("mlseclab_results", None)
    config.stash[_KEY] = _Session(
        lab=lab,
        only=set(config.getoption("mlseclab_node") or []),
        lab_scope_only=bool(config.getoption("mlseclab_lab_scope", False)),
        results_path=Path(results) if results else None,
    )


_KEY = pytest.StashKey[_Session]()


def _session(config: pytest.Config) -> _Session:
    try:
        return config.stash[_KEY]
    except KeyError:
        raise pytest.UsageError(
            "the posture checks need a lab: run them with `mlseclab verify`, "
            "or pass --mlseclab-spec inventories/<lab>/lab.yaml"
        ) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "node" not in metafunc.fixturenames:
        return
    sess = _session(metafunc.config)
    marker = metafunc.definition.get_closest_marker("roles")
    roles = set(marker.args) if marker else set()
    chosen = [
        n
        for n in sess.lab.nodes()
        if (not roles or n.role in roles) and (not sess.only or n.name in sess.only)
    ]
    metafunc.parametrize("node", chosen, ids=[n.name for n in chosen], scope="function")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Node filter: only that node's checks; lab scope: only the checks without a node.

    A check whose roles no chosen node has gets an empty parameter set from pytest
    (a placeholder item that would be reported as skipped): it is deselected instead.
    """
    sess = config.stash.get(_KEY, None)
    if sess is None:
        return
    empty = [i for i in items if "node" in getattr(i, "fixturenames", ()) and _node_of(i) is None]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [i for i in items if i not in empty]
    if not (sess.only or sess.lab_scope_only):
        return
    has_node = [i for i in items if "node" in getattr(i, "fixturenames", ())]
    keep = [i for i in items if i not in has_node] if sess.lab_scope_only else has_node
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> PostureLab:
    return _session(pytestconfig).lab


_HOSTS: dict[str, Any] = {}


@pytest.fixture
def host(node: PostureNode, lab: PostureLab) -> Any:
    import testinfra

    if node.name not in _HOSTS:
        _HOSTS[node.name] = testinfra.get_host(
            f"ssh://{node.name}", ssh_config=str(lab.ssh_config), sudo=True
        )
    return _HOSTS[node.name]


def _node_of(item: pytest.Item) -> PostureNode | None:
    callspec = getattr(item, "callspec", None)
    node = callspec.params.get("node") if callspec is not None else None
    return node if isinstance(node, PostureNode) else None


def _controls(item: pytest.Item) -> tuple[dict[str, tuple[str, ...]], str]:
    marker = item.get_closest_marker("control")
    out: dict[str, list[str]] = {"lab": [], **{f: [] for f in FRAMEWORKS}}
    if marker is None:
        return _frozen(out), ""
    out["lab"] = [str(a) for a in marker.args]
    for key, value in marker.kwargs.items():
        values = value if isinstance(value, list | tuple) else str(value).split(",")
        out.setdefault(key, []).extend(v.strip() for v in values if str(v).strip())
    doc = (getattr(getattr(item, "obj", None), "__doc__", None) or "").strip().splitlines()
    return _frozen(out), doc[0] if doc else item.name


def _frozen(controls: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in controls.items()}


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.get_closest_marker("control") is None:
        raise pytest.UsageError(
            f"{item.nodeid}: a posture check must carry @pytest.mark.control(...)"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    sess = item.config.stash.get(_KEY, None)
    if sess is not None and (
        report.when == "call" or (report.when == "setup" and not report.passed)
    ):
        _record(sess, item, report)
    return report


def _record(sess: _Session, item: pytest.Item, report: pytest.TestReport) -> None:
    node = _node_of(item)
    controls, title = _controls(item)
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(NA_PREFIX):
            observed, evidence = Outcome.NOT_APPLICABLE, reason.removeprefix(NA_PREFIX)
        else:
            observed, evidence = Outcome.SKIPPED, reason
    elif report.passed:
        observed, evidence = Outcome.PASSED, ""
    else:
        observed = Outcome.FAILED if report.when == "call" else Outcome.ERROR
        evidence = _evidence(report)
    name = node.name if node else LAB_SCOPE
    # the waivers were checked by validate (control ids, node names): here they only apply
    waiver = waiver_for(sess.lab.spec.posture.waivers, controls["lab"], name)
    outcome = Outcome.WAIVED if waiver and observed in WAIVABLE else observed
    sess.results[item.nodeid] = CheckResult(
        nodeid=item.nodeid,
        check=getattr(item, "originalname", item.name),
        node=name,
        role=node.role if node else LAB_SCOPE,
        outcome=outcome,
        observed=observed,
        controls=controls,
        title=title,
        evidence=evidence,
        waiver=waiver,
        seconds=round(report.duration, 3),
    )


def _evidence(report: pytest.TestReport) -> str:
    """The assertion message and the lines around it, without pytest's source listing."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(crash.message) if crash is not None else str(report.longrepr)
    return text[:4000]


def pytest_sessionfinish(session: pytest.Session) -> None:
    sess = session.config.stash.get(_KEY, None)
    if sess is None or sess.results_path is None:
        return
    sess.results_path.parent.mkdir(parents=True, exist_ok=True)
    payload = [r.as_dict() for r in sess.results.values()]
    sess.results_path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    for h in _HOSTS.values():
        close = getattr(getattr(h, "backend", None), "close", None)
        if callable(close):
            close()
