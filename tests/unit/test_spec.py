"""The lab spec: every valid fixture loads, every invalid one fails with its exact message."""

from __future__ import annotations

import copy
import functools
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from helpers.labs import REFERENCE, SPECS, load_text, reference_text
from mlseclab import posture
from mlseclab.cli import main
from mlseclab.errors import SpecError
from mlseclab.spec import LabSpec, load_spec, validate_data
from mlseclab.spec.messages import _inner_model, dotted
from mlseclab.yamlsource import Located

INVALID = sorted((SPECS / "invalid").glob("*.yaml"))
VALID = sorted((SPECS / "valid").glob("*.yaml"))

EXPECTED_MISTAKES = {
    "vlan-out-of-range",
    "cidr-host-bits",
    "overlapping-cidrs",
    "address-outside-network",
    "duplicate-address",
    "duplicate-node-name",
    "flow-to-unknown-role",
    "gpu-on-container",
    "mount-undeclared-dataset",
    "unknown-key",
    "wrong-type",
    "yaml-syntax-error",
    "empty-file",
    "vllm-without-gpu",
    # spec strings rendered into other languages (issue 13)
    "nft-injection-flow-name",
    "template-in-flow-name",
    "template-in-description",
    "domain-newline-proxycommand",
    "description-bidi-override",
    "node-name-too-long-for-certificate",
    "machine-name-too-long",
    "flow-label-too-long",
    "proxmox-datastore-slash",
    "model-name-with-quote",
    "node-tag-with-space",
    "segment-name-too-long",
    "datasets-root-system-dir",
    "datasets-root-inside-etc",
    "mount-path-proc",
    "mount-path-colon",
    "mount-path-double-slash",
    "mount-path-dot-dot",
    "mount-path-system-dir",
    "model-path-newline",
    "model-path-system-dir",
    "uplink-too-large",
    "uplink-32",
    "segment-too-large",
    "alias-bomb",
    "recursive-alias",
    "deep-nesting",
    "control-character",
    "impossible-date",
    "proxmox-template-typo",
    "proxmox-sdn-zone-with-hyphen",
    "proxmox-sdn-zone-too-long",
    "container-on-proxmox",
    "waiver-expires-not-a-date",
    "waiver-unknown-control",
}


def expected(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: LINE: ...'"
    return f"{path}:{first.removeprefix('# expect: ')}"


def test_every_mistake_has_a_fixture() -> None:
    assert {p.stem for p in INVALID} >= EXPECTED_MISTAKES


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture_fails_with_its_message(path: Path) -> None:
    with pytest.raises(SpecError) as exc:  # what validate checks: the spec, then the waivers
        posture.check_waivers(load_spec(path), path)
    assert [str(p) for p in exc.value.problems] == [expected(path)]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_cli_reports_invalid_spec_without_traceback(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == expected(path)
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("path", [REFERENCE, *VALID], ids=lambda p: p.stem)
def test_valid_spec_loads(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0
    assert ": valid — lab " in capsys.readouterr().out


def test_missing_file_names_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "no/such/lab.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("no/such/lab.yaml:0: no such file; pass a lab spec")


def test_every_problem_is_reported_not_only_the_first() -> None:
    text = (
        reference_text()
        .replace("vlan: 20", "vlan: 9000")
        .replace("ip: 10.66.50.14", "ip: 10.66.9.14")
    )
    with pytest.raises(SpecError) as exc:
        load_text(text)
    messages = [p.message for p in exc.value.problems]
    assert any("VLAN id 9000 is out of range" in m for m in messages)
    # field errors stop before whole-lab rules; the second mistake shows once the first is fixed
    text = (
        reference_text()
        .replace("ip: 10.66.50.14", "ip: 10.66.9.14")
        .replace("ip: 10.66.60.15", "ip: 10.66.10.14")
    )
    with pytest.raises(SpecError) as exc:
        load_text(text)
    paths = [p.path for p in exc.value.problems]
    assert paths == ["nodes.rag-01.nics[1].ip", "nodes.obs-01.nics[1].ip"]


@pytest.mark.parametrize(
    ("old", "new", "path", "fragment"),
    [
        ("name: reference", "name: Reference_Lab", "lab.name", "is not a lab name"),
        (
            "{vlan: 20, cidr",
            "{vlan: 10, cidr",
            "networks.edge.vlan",
            "already used by network mgmt",
        ),
        ("purpose: mgmt}", "purpose: app}", "networks", "exactly one network with purpose mgmt"),
        (
            "{network: mgmt, ip: 10.66.10.14}",
            "{network: app, ip: 10.66.50.24}",
            "nodes.rag-01.nics[1].network",
            "two NICs on app",
        ),
        (
            "{network: app, ip: 10.66.50.14}",
            "{network: ap, ip: 10.66.50.14}",
            "nodes.rag-01.nics[1].network",
            "did you mean 'app'?",
        ),
        ("ip: 10.66.50.14", "ip: 10.66.50.1", "nodes.rag-01.nics[1].ip", "the gateway of app"),
        (
            "vm_id: 6615",
            "vm_id: 6614",
            "nodes.obs-01.vm_id",
            "already used by rag-01; give each node its own vm_id",
        ),
        (
            "      - {dataset: vectors, path: /srv/vectors, mode: rw}",
            "      - {dataset: vectors, path: /srv/vectors, mode: rw}\n"
            "      - {dataset: vectors, path: /srv/vectors}",
            "nodes.vectordb-01.mounts[1].path",
            "/srv/vectors is mounted twice on vectordb-01; give each mount its own path",
        ),
        ("to: rag, port: 8080", "to: rag, port: 80800", "flows[1].port", "out of range"),
        (
            "from: operator, to: all",
            "from: operator, to: any",
            "flows[7].to",
            "can only be a source",
        ),
        (
            "kind: vm\n    cpu: 8",
            "kind: container\n    cpu: 8",
            "nodes.inference-01.gpu",
            "a GPU needs a VM",
        ),
        (
            "path: /srv/models",
            "path: srv/models",
            "nodes.inference-01.mounts[0].path",
            "not a mount point",
        ),
        (
            "protect: true\n  vectors",
            "protect: yes please\n  vectors",
            "datasets.models.protect",
            "expected true or false",
        ),
        (
            "network_mode: bridge ",
            "network_mode: vxlan ",
            "lab.proxmox.network_mode",
            "'vxlan' is not allowed; valid: 'bridge' or 'sdn'",
        ),
        (
            "uplink_cidr: 10.66.255.0/30",
            "uplink_cidr: 10.66.10.0/30",
            "lab.local.uplink_cidr",
            "overlaps network mgmt",
        ),
    ],
)
def test_rule(old: str, new: str, path: str, fragment: str) -> None:
    text = reference_text()
    assert old in text, old
    with pytest.raises(SpecError) as exc:
        load_text(text.replace(old, new, 1))
    problems = {p.path: p.message for p in exc.value.problems}
    assert path in problems, problems
    assert fragment in problems[path]
    line = next(p.line for p in exc.value.problems if p.path == path)
    assert line > 0


@pytest.mark.parametrize(
    ("old", "new", "path", "fragment"),
    [
        (
            "source: builtin:gemma-3-270m",
            "source: builtin:gemma-3-27b",
            "models.gemma-3-270m.source",
            "unknown built-in model 'gemma-3-27b'",
        ),
        (
            "sha256: a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "sha256: b5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "models.gemma-3-270m.sha256",
            "does not match the pinned sha256",
        ),
        (
            "source: builtin:gemma-3-270m",
            "source: file:/srv/import/model.pt",
            "models.gemma-3-270m.source",
            "is a pickle format",
        ),
        (
            "source: builtin:gemma-3-270m",
            "source: hf:google/gemma",
            "models.gemma-3-270m.source",
            "use builtin:<name> or file:",
        ),
        ("task: completion", "task: vision", "models.gemma-3-270m.task", "not allowed"),
        (
            "{dataset: models, path: /srv/models, mode: ro}",
            "{dataset: corpora, path: /srv/c, mode: ro}",
            "nodes.inference-01.mounts",
            "does not mount dataset models",
        ),
    ],
)
def test_model_rule(old: str, new: str, path: str, fragment: str) -> None:
    test_rule(old, new, path, fragment)


@pytest.mark.parametrize(
    ("old", "new", "path", "fragment"),
    [
        (
            "role: gateway\n    kind: vm",
            "role: gateway\n    engine: llama_cpp\n    kind: vm",
            "nodes.gateway-01.engine",
            "engine applies to inference nodes only: gateway-01 is a gateway; remove engine",
        ),
        (
            "kind: vm\n    cpu: 8",
            "kind: container\n    engine: vllm\n    cpu: 8",
            "nodes.inference-01.engine",
            "engine vllm needs a VM with an NVIDIA GPU: inference-01 is a container",
        ),
        (
            "    gpu: {mapping: gpu-inference}",
            "    engine: vllm",
            "nodes.inference-01.engine",
            "inference-01 has no gpu",
        ),
        (
            "kind: vm\n    cpu: 8",
            "kind: vm\n    engine: vllm\n    cpu: 8",
            "models.gemma-3-270m.source",
            "inference-01 serves with engine vllm, which loads one safetensors model directory "
            "(file:/path/model/); set nodes.inference-01.engine: llama_cpp or change the model",
        ),
        (
            "kind: vm\n    cpu: 8",
            "kind: vm\n    engine: vllm\n    cpu: 8",
            "nodes.inference-01.engine",
            "engine vllm serves one model per node and the spec declares 2",
        ),
        (
            "source: builtin:gemma-3-270m",
            "source: file:/srv/import/gemma-3-270m/",
            "models.gemma-3-270m.source",
            "inference-01 serves with engine llama_cpp, which loads GGUF files only",
        ),
        (
            "source: builtin:gemma-3-270m",
            "source: file:/srv/import/gemma.safetensors",
            "models.gemma-3-270m.source",
            "or to a safetensors model directory ending in / (engine vllm)",
        ),
        (
            "kind: vm\n    cpu: 8",
            "kind: vm\n    engine: tensorrt\n    cpu: 8",
            "nodes.inference-01.engine",
            "'tensorrt' is not allowed; valid: 'llama_cpp' or 'vllm'",
        ),
    ],
)
def test_engine_rule(old: str, new: str, path: str, fragment: str) -> None:
    text = reference_text()
    assert old in text, old
    with pytest.raises(SpecError) as exc:
        load_text(text.replace(old, new, 1))
    at_path = [p for p in exc.value.problems if p.path == path]
    assert any(fragment in p.message for p in at_path), exc.value.problems
    assert all(p.line > 0 for p in at_path)


def test_engine_defaults_to_llama_cpp_and_reaches_the_inventory() -> None:
    from mlseclab.inventory import host_vars
    from mlseclab.topology import derive

    spec = load_spec(REFERENCE)
    assert spec.nodes["inference-01"].engine == "llama_cpp"
    topo = derive(spec)
    assert host_vars(topo, "inference-01", "vm")["mlseclab_engine"] == "llama_cpp"
    assert host_vars(topo, "gateway-01", "vm")["mlseclab_engine"] is None
    gpu = derive(load_spec(SPECS / "valid" / "vllm-gpu.yaml"))
    assert host_vars(gpu, "inference-01", "vm")["mlseclab_engine"] == "vllm"


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError) as exc:
        load_text("- just\n- a list\n")
    assert "expected a mapping with keys lab, networks, nodes" in str(exc.value)


@functools.cache
def _reference_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(reference_text())
    return data


def _full_spec() -> dict[str, Any]:
    """The reference lab as data, with every optional section filled in."""
    data = copy.deepcopy(_reference_data())
    data["lab"]["target"] = "proxmox"
    data["posture"]["waivers"] = [{"control": "MLSL-NET-01", "reason": "a reason long enough"}]
    data["nodes"]["inference-01"]["gpu"] = {"mapping": "gpu-inference"}
    data["datasets"]["models"]["snapshots"] = {"keep": 3}
    return data


def _model_sites(
    data: Any, model: type[BaseModel], path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], type[BaseModel]]]:
    """Every place in ``data`` that holds a mapping of a model, with the model."""
    yield path, model
    for name, field in model.model_fields.items():
        key = field.alias or name
        value = data.get(key)
        inner = _inner_model(field.annotation)
        if inner is not None:
            if isinstance(value, dict):
                yield from _model_sites(value, inner, (*path, key))
            continue
        args = [a for a in typing.get_args(field.annotation) if _inner_model(a) is not None]
        item = _inner_model(args[-1]) if args else None
        if item is not None and isinstance(value, dict):
            for k, v in value.items():
                yield from _model_sites(v, item, (*path, key, k))
        elif item is not None and isinstance(value, list):
            for i, v in enumerate(value):
                yield from _model_sites(v, item, (*path, key, i))


SITES = list({m: (p, m) for p, m in reversed(list(_model_sites(_full_spec(), LabSpec)))}.values())
SITE_IDS = [dotted(path) or "spec" for path, _ in SITES]


def _at(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as exc:
        validate_data(Located(data), "lab.yaml")  # as parse_spec does, without the YAML
    return [f"{p.path}: {p.message}" for p in exc.value.problems]


def test_the_probe_reaches_every_model() -> None:
    from mlseclab.spec import schema

    models = {
        m
        for m in vars(schema).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == schema.__name__
    }
    assert {m for _, m in SITES} == models - {schema.Strict}


@pytest.mark.parametrize(("path", "model"), SITES, ids=SITE_IDS)
def test_an_unknown_key_anywhere_names_the_valid_keys(
    path: tuple[str | int, ...], model: type[BaseModel]
) -> None:
    data = _full_spec()
    _at(data, path)["tagg"] = 1
    names = sorted(f.alias or n for n, f in model.model_fields.items())
    where = dotted((*path, "tagg"))
    assert _problems(data)[0].startswith(
        f"{where}: unknown key 'tagg'; valid keys here: {', '.join(names)}"
    )


@pytest.mark.parametrize(("path", "model"), SITES, ids=SITE_IDS)
def test_a_wrong_type_anywhere_is_a_clean_message(
    path: tuple[str | int, ...], model: type[BaseModel]
) -> None:
    for name, field in model.model_fields.items():
        key = field.alias or name
        for wrong in ({"zz": 1}, [1], 3.5):
            data = _full_spec()
            _at(data, path)[key] = wrong
            problems = _problems(data)  # a SpecError, never a traceback
            assert problems and all("; " in p or "expected" in p for p in problems), problems


def _waived(tmp_path: Path, waiver: str) -> Path:
    """The reference lab with one waiver (a YAML flow mapping); ``{C}``: control and reason."""
    waiver = waiver.replace("{C}", "control: MLSL-NET-01, reason: a reason long enough")
    text = reference_text()
    assert "  waivers: []" in text
    path = tmp_path / "lab.yaml"
    path.write_text(text.replace("  waivers: []", f"  waivers:\n    - {waiver}"), encoding="utf-8")
    return path


def test_waiver_expires_is_a_date_and_validate_warns_when_it_has_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    future = _waived(tmp_path, "{{C}, expires: 2999-01-31}")
    assert load_spec(future).posture.waivers[0].expires == dt.date(2999, 1, 31)
    assert main(["validate", str(future)]) == 0
    assert capsys.readouterr().err == ""

    past = _waived(tmp_path, "{{C}, expires: 2020-01-31}")
    assert main(["validate", str(past)]) == 0
    captured = capsys.readouterr()
    line = next(n for n, ln in enumerate(past.read_text().splitlines(), 1) if "2020-01-31" in ln)
    assert captured.err == (
        f"warning: {past}:{line}: posture.waivers[0].expires: the waiver of MLSL-NET-01 expired "
        "on 2020-01-31 and no longer applies; renew it with a later date or remove it\n"
    )
    assert ": valid — lab reference" in captured.out


# (an unquoted 2027-13-01 is refused by the loader already, with its line: impossible-date)
@pytest.mark.parametrize("value", ["never", '"2027-13-01"', "2027-01-31 10:00:00"])
def test_waiver_expires_that_is_no_date_says_how_to_write_one(tmp_path: Path, value: str) -> None:
    path = _waived(tmp_path, "{{C}, expires: " + value + "}")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    (problem,) = exc.value.problems
    assert problem.path == "posture.waivers[0].expires"
    assert problem.message.endswith(
        "is not a date; write it as YYYY-MM-DD (e.g. 2027-01-31), "
        "or leave expires out for a waiver without an end"
    )


def test_validate_checks_waiver_controls_without_importing_pytest(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _waived(tmp_path, "{control: MLSL-NET-99, reason: a typo that would waive nothing}")
    code = (
        "import sys; from mlseclab.cli import main; rc = main(['validate', sys.argv[1]]); "
        "assert 'pytest' not in sys.modules and 'mlseclab.posture.plugin' not in sys.modules; "
        "sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "posture.waivers[0].control: MLSL-NET-99 is not a control" in proc.stderr
