"""The inference role's vLLM engine, tested without a GPU and without installing vLLM.

- the lock file: every requirement pinned by version and sha256, vllm at the pinned release;
- the templates, rendered by Ansible itself with the role's defaults
  (tests/roles/playbooks/render-inference.yml): the unit's argv and sandbox, the key file,
  the manifest, and the pre-start check run for real against a model directory;
- the middleware that puts the API key on every route, driven as an ASGI app;
- the role's argument spec (engine choices), ansible-lint on the vLLM task files;
- the default llama.cpp path renders what it rendered before (no vLLM in it).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from helpers.labs import SPECS
from mlseclab.errors import TargetError
from mlseclab.ml.catalog import PICKLE_SUFFIXES
from mlseclab.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "inference"
LOCK = ROLE / "files" / "vllm-requirements.txt"
RENDER = ROOT / "tests" / "roles" / "playbooks" / "render-inference.yml"
BIN = Path(sys.executable).parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?: --hash=sha256:[0-9a-f]{64})+)$")
KEY = "test-key-7f3a9c-never-in-argv"
ADDRESS = "10.66.30.12"


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCKER = load_module(ROOT / "scripts" / "vllm-lock.py", "vllm_lock")
AUTH = load_module(ROLE / "files" / "mlseclab_vllm_auth.py", "mlseclab_vllm_auth")


def lock_pins() -> dict[str, tuple[str, list[str]]]:
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"not pinned with a sha256: {line!r}"
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        assert name not in pins, f"{name} is locked twice"
        pins[name] = (m.group(2), re.findall(r"[0-9a-f]{64}", m.group(3)))
    return pins


# -- the lock ---------------------------------------------------------------------------


def test_lock_pins_every_requirement_by_version_and_sha256() -> None:
    pins = lock_pins()
    assert pins["vllm"][0] == LOCKER.VERSION
    header = LOCK.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith(f"# vllm=={LOCKER.VERSION} and every dependency: {len(pins)} wheels")
    # vLLM's own runtime dependencies: a lock without them is not the complete set
    for needed in ("torch", "triton", "transformers", "tokenizers", "safetensors", "fastapi"):
        assert needed in pins, f"{needed} missing from the lock"
    assert all(len(hashes) >= 1 for _version, hashes in pins.values())
    assert len(pins) > 100


def test_lock_script_refuses_to_resolve_for_the_wrong_python() -> None:
    if sys.version_info[:2] == (3, 13):
        pytest.skip("this interpreter is the one the lock is made for")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "vllm-lock.py"), "--lock", os.devnull],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "run me with CPython 3.13 on linux x86_64" in done.stderr


def python313() -> str | None:
    """A CPython 3.13 that really runs (a pyenv shim may exist without one)."""
    pyenv = sorted((Path.home() / ".pyenv" / "versions").glob("3.13*/bin/python3.13"))
    candidates = [
        os.environ.get("MLSECLAB_PYTHON313"),
        *map(str, pyenv),
        shutil.which("python3.13"),
    ]
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 13)"]
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(
    os.environ.get("MLSECLAB_NETWORK_TESTS") != "1",
    reason="resolves vLLM against PyPI (2-5 min); set MLSECLAB_NETWORK_TESTS=1",
)
def test_lock_is_exactly_what_pip_resolves_for_the_pinned_versions(tmp_path: Path) -> None:
    """Resolve vllm again with the lock's versions as constraints: same set, same hashes."""
    python = python313()
    if python is None:
        pytest.skip("needs a CPython 3.13 (python3.13 or MLSECLAB_PYTHON313)")
    pins = lock_pins()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, (v, _h) in pins.items()))
    report = tmp_path / "report.json"
    cmd = [python, "-m", "pip", "--isolated", "install", "--index-url", LOCKER.INDEX]
    cmd += ["--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
    cmd += [*LOCKER.target_args(), "-c", str(constraints), f"vllm=={LOCKER.VERSION}"]
    if os.environ.get("PIP_CERT"):
        cmd[4:4] = ["--cert", os.environ["PIP_CERT"]]
    subprocess.run(cmd, check=True, timeout=900)
    resolved = {
        re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): (
            i["metadata"]["version"],
            [i["download_info"]["archive_info"]["hashes"]["sha256"]],
        )
        for i in json.loads(report.read_text())["install"]
    }
    assert resolved == pins


# -- rendering the role's templates with Ansible ----------------------------------------


def render(tmp_path: Path, engine: str, **extra: Any) -> dict[str, str]:
    out = tmp_path / f"render-{engine}"
    out.mkdir()
    variables: dict[str, Any] = {
        "render_dir": str(out),
        "mlseclab_engine": engine,
        "inference_api_key": KEY,
        "mlseclab_service_ips": [ADDRESS],
        "mlseclab_pickle_suffixes": list(PICKLE_SUFFIXES),  # the inventory's
        **extra,
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    playbook = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(RENDER)]
    done = subprocess.run(
        [*playbook, "-e", f"@{tmp_path / 'vars.json'}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ['PATH']}"},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()}


def directives(unit: str) -> list[tuple[str, str]]:
    return [
        (k, v)
        for k, _, v in (ln.partition("=") for ln in unit.splitlines())
        if k and not k.startswith(("#", "["))
    ]


def options(args: list[str]) -> dict[str, str]:
    """--flag value pairs of an argv tail; a flag with no value maps to ''."""
    out: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            following = args[i + 1] if i + 1 < len(args) else "--"
            out[arg] = "" if following.startswith("--") else following
    return out


def vllm_model(sha256: str = "0" * 64) -> list[dict[str, str]]:
    return [
        {
            "name": "qwen2.5-0.5b-instruct",
            "file": "Qwen2.5-0.5B-Instruct",
            "sha256": sha256,
            "task": "chat",
            "dataset": "models",
        }
    ]


def listing_command() -> str:
    """The role's own command that lists a model directory's files with their sha256."""
    tasks = yaml.safe_load((ROLE / "tasks" / "vllm_models.yml").read_text())
    (task,) = [t for t in tasks if "ansible.builtin.shell" in t]
    cmd: str = task["ansible.builtin.shell"]["cmd"]
    return cmd.replace("{{ item.file | quote }}", "Qwen2.5-0.5B-Instruct")


@pytest.fixture(scope="module")
def vllm_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    listing = "a" * 64 + "  Qwen2.5-0.5B-Instruct/config.json"
    return render(
        tmp_path_factory.mktemp("vllm"),
        "vllm",
        mlseclab_models=vllm_model(),
        mlseclab_gpu={"mapping": "gpu-inference", "pcie": True, "count": 2},
        inference_vllm_listings={"results": [{"stdout": listing}]},
    )


def test_vllm_unit_argv_binds_the_inference_address_and_never_holds_the_key(
    vllm_files: dict[str, str],
) -> None:
    unit = vllm_files["mlseclab-inference.service"]
    assert KEY not in unit
    (exec_start,) = [v for k, v in directives(unit) if k == "ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[:3] == [
        "/opt/mlseclab/inference/vllm-venv/bin/vllm",
        "serve",
        "/srv/models/Qwen2.5-0.5B-Instruct",
    ]
    flags = options(argv[3:])
    assert flags["--host"] == ADDRESS
    assert flags["--port"] == "8000"
    assert flags["--served-model-name"] == "qwen2.5-0.5b-instruct"
    assert flags["--load-format"] == "safetensors"
    assert flags["--runner"] == "generate"
    assert flags["--tensor-parallel-size"] == "2"  # the spec's gpu.count
    assert flags["--middleware"] == "mlseclab_vllm_auth.RequireKey"
    assert flags["--disable-fastapi-docs"] == ""
    assert not any(a.startswith(("--api-key", "--api_key", "--trust-remote-code")) for a in argv)
    assert "0.0.0.0" not in argv  # noqa: S104 - the check that it does not bind everywhere


def test_vllm_unit_is_sandboxed_with_only_the_gpu_devices(vllm_files: dict[str, str]) -> None:
    d = directives(vllm_files["mlseclab-inference.service"])
    for directive in [
        ("User", "llm"),
        ("Group", "llm"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ReadOnlyPaths", "/srv/models"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "char-nvidia-frontend rw"),
        ("DeviceAllow", "char-nvidia-uvm rw"),
        ("CacheDirectoryMode", "0700"),
        ("StateDirectoryMode", "0700"),
        ("EnvironmentFile", "/etc/mlseclab/inference/vllm.env"),
        ("ExecStartPre", "/usr/local/libexec/mlseclab-inference-verify"),
        ("UMask", "0077"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallFilter", "~@privileged"),
        ("RestrictSUIDSGID", "yes"),
    ]:
        assert directive in d, directive
    env = dict(v.split("=", 1) for k, v in d if k == "Environment")
    for cache in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "HF_HOME", "VLLM_CACHE_ROOT"):
        assert env[cache].startswith("/var/cache/mlseclab-inference/"), cache
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["VLLM_PLUGINS"] == "" and env["VLLM_SERVER_DEV_MODE"] == "0"
    assert not any("KEY" in name for name in env)  # the key comes only from EnvironmentFile
    assert ("PrivateDevices", "yes") not in d  # it would hide /dev/nvidia*


def test_vllm_key_file_is_root_only_and_written_without_logging(
    vllm_files: dict[str, str],
) -> None:
    assert vllm_files["vllm.env"].splitlines()[-1] == f"VLLM_API_KEY={KEY}"
    tasks = yaml.safe_load((ROLE / "tasks" / "vllm_config.yml").read_text())
    (task,) = [
        t
        for t in tasks
        if t.get("ansible.builtin.template", {}).get("src", "").endswith("vllm.env.j2")
    ]
    assert task["ansible.builtin.template"]["mode"] == "0600"
    assert task["ansible.builtin.template"]["owner"] == "root"
    assert task["ansible.builtin.template"]["group"] == "root"
    assert task["no_log"] is True


def test_vllm_embedding_model_runs_the_pooling_runner_and_extra_args_follow(
    tmp_path: Path,
) -> None:
    model = vllm_model()
    model[0]["task"] = "embedding"
    files = render(
        tmp_path,
        "vllm",
        mlseclab_models=model,
        inference_vllm_extra_args=["--enable-prefix-caching"],
        inference_vllm_key_on_every_route=False,
        inference_vllm_listings={"results": [{"stdout": ""}]},
    )
    (exec_start,) = [
        v for k, v in directives(files["mlseclab-inference.service"]) if k == "ExecStart"
    ]
    argv = shlex.split(exec_start)
    assert argv[argv.index("--runner") + 1] == "pooling"
    assert argv[-1] == "--enable-prefix-caching"
    assert "--middleware" not in argv
    assert (
        "--tensor-parallel-size" in argv and argv[argv.index("--tensor-parallel-size") + 1] == "1"
    )


def test_role_refuses_key_and_remote_code_flags_in_extra_args() -> None:
    tasks = yaml.safe_load((ROLE / "tasks" / "vllm_config.yml").read_text())
    (check,) = [
        t for t in tasks if "--api-key" in t.get("ansible.builtin.assert", {}).get("fail_msg", "")
    ]
    pattern = re.search(r"select\('match', '([^']+)'\)", check["ansible.builtin.assert"]["that"][0])
    assert pattern is not None
    refused = re.compile(pattern.group(1))
    for flag in (
        "--api-key",
        "--api-key=x",
        "--api_key",
        "--trust-remote-code",
        "--trust_remote_code",
    ):
        assert refused.match(flag), flag
    for flag in ("--enable-prefix-caching", "--api-server-count", "--no-trust-remote-code"):
        assert not refused.match(flag), flag


# -- the pre-start check, run for real against a model directory -------------------------


def make_model(models: Path) -> Path:
    model = models / "Qwen2.5-0.5B-Instruct"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}\n')
    (model / "tokenizer.json").write_text("{}\n")
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (model / "sub" / "chat_template.jinja").write_text("{{ messages }}\n")
    return model


def test_vllm_pre_start_check_refuses_added_changed_pickled_or_linked_files(
    tmp_path: Path,
) -> None:
    models, config = tmp_path / "models", tmp_path / "config"
    config.mkdir()
    model = make_model(models)
    listed = subprocess.run(
        ["bash", "-c", listing_command()], cwd=models, capture_output=True, text=True, check=True
    ).stdout.rstrip("\n")
    # the pin the README tells users to compute is what the role compares (stdout + newline)
    documented = subprocess.run(
        ["bash", "-c", listing_command() + " | sha256sum"],
        cwd=models,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert documented == hashlib.sha256((listed + "\n").encode()).hexdigest()
    files = render(
        tmp_path,
        "vllm",
        mlseclab_models=vllm_model(documented),
        inference_models_dir=str(models),
        inference_config_dir=str(config),
        inference_vllm_listings={"results": [{"stdout": listed}]},
    )
    assert files["models.sha256"] == listed + "\n"
    assert len(files["models.sha256"].splitlines()) == 4
    (config / "models.sha256").write_text(files["models.sha256"])
    verify = tmp_path / "verify"
    verify.write_text(files["mlseclab-inference-verify"])

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(verify)], capture_output=True, text=True, check=False)

    assert check().returncode == 0, check().stderr
    shard = model / "model-00002-of-00002.safetensors"
    shard.write_bytes(b"extra")
    assert "not the ones" in check().stderr
    shard.unlink()
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}     !")
    assert "does not match" in check().stderr
    make_model(tmp_path / "again")
    shutil.copy(tmp_path / "again" / model.name / "model.safetensors", model / "model.safetensors")
    assert check().returncode == 0
    (model / "training_args.bin").write_bytes(b"\x80\x04")
    assert "pickle-based model file" in check().stderr
    (model / "training_args.bin").unlink()
    (model / "extra.json").symlink_to(model / "config.json")
    assert "neither a regular file nor a directory" in check().stderr
    (model / "extra.json").unlink()
    assert check().returncode == 0


# -- the middleware that puts the key on every route ------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(scope.get("path", scope["type"]))


def call(app: Callable[..., Any], scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def http(path: str, authorization: bytes | None = None) -> dict[str, Any]:
    headers = [(b"host", b"x")] + ([(b"authorization", authorization)] if authorization else [])
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


@pytest.mark.parametrize("path", ["/invocations", "/tokenize", "/metrics", "/health", "/v1/models"])
def test_middleware_answers_401_without_the_key_on_every_route(path: str) -> None:
    inner = Recorder()
    app = AUTH.RequireKey(inner, key=KEY)
    for auth in (None, b"Bearer wrong", KEY.encode(), b"Basic " + KEY.encode()):
        sent = call(app, http(path, auth))
        assert sent[0]["status"] == 401 and sent[1]["body"] == b'{"error":"Unauthorized"}'
    assert inner.calls == []
    assert call(app, http(path, b"Bearer " + KEY.encode())) == []
    assert inner.calls == [path]


def test_middleware_closes_websockets_without_the_key_and_passes_lifespan() -> None:
    inner = Recorder()
    app = AUTH.RequireKey(inner, key=KEY)
    ws = {"type": "websocket", "path": "/v1/realtime", "headers": []}
    assert call(app, ws) == [{"type": "websocket.close", "code": 1008}]
    assert call(app, {"type": "lifespan"}) == []
    assert inner.calls == ["lifespan"]


def test_middleware_reads_vllm_api_key_and_refuses_to_run_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    app = AUTH.RequireKey(Recorder())
    assert call(app, http("/tokenize", b"Bearer " + KEY.encode())) == []
    monkeypatch.setenv("VLLM_API_KEY", "")
    with pytest.raises(RuntimeError, match="VLLM_API_KEY is empty"):
        AUTH.RequireKey(Recorder())


# -- the default path, the argument spec, lint --------------------------------------------


def test_llama_cpp_render_has_no_vllm_in_it(tmp_path: Path) -> None:
    models = [
        {"name": "b", "file": "b.gguf", "sha256": "b" * 64, "task": "completion"},
        {"name": "a", "file": "a.gguf", "sha256": "a" * 64, "task": "embedding"},
    ]
    files = render(tmp_path, "llama_cpp", mlseclab_models=models)
    assert files["models.sha256"] == f"{'a' * 64}  a.gguf\n{'b' * 64}  b.gguf\n"
    unit = files["mlseclab-inference.service"]
    assert "Environment=CONFIG_FILE=/etc/mlseclab/inference/server.json" in unit
    assert "PrivateDevices=yes" in unit and "vllm" not in unit.lower() and KEY not in unit
    assert "vLLM" not in files["mlseclab-inference-verify"]
    assert json.loads(files["server.json"])["api_key"] == KEY


def argument_check(tmp_path: Path, engine: str) -> subprocess.CompletedProcess[str]:
    play = tmp_path / "play.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Validate the inference role's arguments only",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {
                        "mlseclab_engine": engine,
                        "mlseclab_service_ips": [ADDRESS],
                        "mlseclab_models": vllm_model(),
                        "mlseclab_pickle_suffixes": list(PICKLE_SUFFIXES),
                        "mlseclab_wheelhouse_dir": "/nonexistent",
                        "mlseclab_secrets_dir": "/nonexistent",
                    },
                    "roles": [{"role": "inference"}],
                }
            ]
        )
    )
    only_the_argument_spec = ["--check", "--tags", "no-such-tag"]  # that check is tagged always
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(play), *only_the_argument_spec],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
        timeout=300,
    )


def test_argument_spec_takes_vllm_and_refuses_an_unknown_engine(tmp_path: Path) -> None:
    assert argument_check(tmp_path, "vllm").returncode == 0
    refused = argument_check(tmp_path, "tensorrt")
    assert refused.returncode != 0
    assert "value of inference_engine must be one of: llama_cpp, vllm, got: tensorrt" in (
        refused.stdout + refused.stderr
    )


def test_vllm_task_files_pass_ansible_lint_production() -> None:
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.skip("ansible-lint is not installed in this environment")
    files = sorted(str(p.relative_to(ROOT)) for p in (ROLE / "tasks").glob("vllm_*.yml"))
    assert len(files) == 4
    done = subprocess.run(
        [str(lint), "--profile", "production", "--offline", "--nocolor", *files],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_local_target_refuses_a_vllm_node_before_producing_anything(tmp_path: Path) -> None:
    from mlseclab.targets.local.artifacts import prepare_local

    spec = load_spec(SPECS / "valid" / "vllm-gpu.yaml")
    with pytest.raises(
        TargetError, match="inference-01: engine vllm needs a VM with an NVIDIA GPU"
    ):
        prepare_local(spec, lambda name: tmp_path / name, tmp_path / "rootfs")
    assert list(tmp_path.iterdir()) == []
