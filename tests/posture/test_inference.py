"""The inference node's model server: bind address, API key, models, sandbox.

Everything is read on the node: the unit as systemd loaded it, the server's
processes and sockets, its configuration file (the API key in it never leaves
the node: the probe scripts use it there and report only statuses), the model
files against the spec's pinned sha256 and the node's manifest. Egress is
denied by the firewall: test_network.py's test_no_egress_off_the_lab.
"""

from __future__ import annotations

from typing import Any

import pytest
from service_state import (
    account_findings,
    file_states,
    mode_findings,
    run_python,
    sandbox_findings,
    service_address,
)

from mlseclab.inventory import served_models
from mlseclab.ml.catalog import PICKLE_SUFFIXES  # pickle: loading runs code (role refuses)
from mlseclab.posture.plugin import PostureLab, PostureNode

pytestmark = pytest.mark.roles("inference")

UNIT = "mlseclab-inference.service"
USER = "llm"
PORT = 8000
CONFIG_DIR = "/etc/mlseclab/inference"
CONFIG = f"{CONFIG_DIR}/server.json"
MANIFEST = f"{CONFIG_DIR}/models.sha256"
VERIFY = "/usr/local/libexec/mlseclab-inference-verify"
MODELS_DIR = "/srv/models"

# The server's processes (the unit's cgroup), what they listen on, and the configured bind.
_BIND_PROBE = r"""
import json, re, subprocess, sys
a = json.loads(sys.argv[1])
unit, cfg = a["unit"], a["config"]
show = dict(l.split("=", 1) for l in subprocess.run(
    ["systemctl", "show", unit, "-p", "ActiveState,ControlGroup,MainPID"],
    capture_output=True, text=True).stdout.splitlines() if "=" in l)
pids = set()
try:
    with open("/sys/fs/cgroup" + show.get("ControlGroup", "/-") + "/cgroup.procs") as f:
        pids = {int(p) for p in f.read().split()}
except OSError:
    pass
socks = []
for line in subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True).stdout.splitlines():
    holders = {int(p) for p in re.findall(r"pid=(\d+)", line)}
    if holders & pids:
        socks.append(line.split()[3])
try:
    with open(cfg) as f:
        c = json.load(f)
    configured = {"host": c.get("host"), "port": c.get("port")}
except (OSError, ValueError) as exc:
    configured = {"error": type(exc).__name__}
out = {"active": show.get("ActiveState"), "sockets": sorted(socks), "configured": configured}
print(json.dumps(out))
"""


@pytest.mark.control("MLSL-INF-01", owasp="LLM10", atlas="AML.T0040")
def test_inference_api_bound_to_inference_address(node: PostureNode, host: Any) -> None:
    """The model server listens on the inference address, port 8000, and nowhere else."""
    address = service_address(node)
    found = run_python(host, _BIND_PROBE, {"unit": UNIT, "config": CONFIG})
    wrong = []
    if found["active"] != "active":
        wrong.append(f"{UNIT} is {found['active']}")
    if found["sockets"] != [f"{address}:{PORT}"]:
        wrong.append(f"the server listens on {found['sockets']}, expected only {address}:{PORT}")
    if found["configured"] != {"host": address, "port": PORT}:
        wrong.append(f"{CONFIG} binds {found['configured']}, expected host {address} port {PORT}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# Ask the API with no key, a wrong key and the configured key; report statuses only.
_AUTH_PROBE = r"""
import json, sys, urllib.error, urllib.request, uuid
a = json.loads(sys.argv[1])
base = f"http://{a['address']}:{a['port']}"
with open(a["config"]) as f:
    key = json.load(f).get("api_key") or ""
# well-formed JSON that no endpoint accepts: with auth off it gets 422, never a generation
invalid = json.dumps({"max_tokens": "x", "messages": "x", "prompt": {}, "input": {}}).encode()
def status(method, path, auth):
    body = invalid if method == "POST" else None
    req = urllib.request.Request(base + path, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    if auth is not None:
        req.add_header("Authorization", "Bearer " + auth)
    try:
        # the server answers one request at a time: a generation the RAG service asked for
        # may be ahead of this one, so the wait is generous (this is a check of auth, not speed)
        with urllib.request.urlopen(req, timeout=90) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return "unreachable: " + type(e).__name__
out = {}
for method, path in a["endpoints"]:
    out[f"{method} {path} no key"] = status(method, path, None)
    out[f"{method} {path} wrong key"] = status(method, path, uuid.uuid4().hex)
ok = status("GET", "/v1/models", key) if key else "no key configured"
out["GET /v1/models configured key"] = ok
print(json.dumps(out))
"""


@pytest.mark.control("MLSL-INF-04", owasp="LLM10", atlas="AML.T0040")
def test_inference_api_requires_key(node: PostureNode, host: Any) -> None:
    """The model server's API answers 401 to requests without the key, 200 with it."""
    endpoints = [
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
    ]
    arg = {"address": service_address(node), "port": PORT, "config": CONFIG, "endpoints": endpoints}
    got = run_python(host, _AUTH_PROBE, arg)
    wrong = [
        f"{what}: {status}, expected 401"
        for what, status in got.items()
        if "key" in what and "configured" not in what and status != 401
    ]
    if got["GET /v1/models configured key"] != 200:
        wrong.append(
            "GET /v1/models with the configured key: "
            f"{got['GET /v1/models configured key']}, expected 200"
        )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# Where the configured key shows: argv or environment of any process, the unit as loaded.
_KEY_PROBE = r"""
import glob, json, subprocess, sys
a = json.loads(sys.argv[1])
try:
    with open(a["config"]) as f:
        key = (json.load(f).get("api_key") or "").encode()
except (OSError, ValueError):
    key = b""
found = []
if key:
    for d in glob.glob("/proc/[0-9]*"):
        for part in ("cmdline", "environ"):
            try:
                with open(f"{d}/{part}", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if key in data:
                try:
                    with open(f"{d}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                found.append(f"{part} of pid {d[6:]} ({comm})")
    show = subprocess.run(["systemctl", "show", a["unit"]], capture_output=True).stdout
    for line in show.splitlines():
        if key in line:
            found.append("systemctl show: " + line.split(b"=", 1)[0].decode())
    cat = subprocess.run(["systemctl", "cat", a["unit"]], capture_output=True).stdout
    if key in cat:
        found.append("unit files (systemctl cat)")
print(json.dumps({"key": bool(key), "found": found}))
"""


@pytest.mark.control("MLSL-INF-04", atlas="AML.T0055")
def test_inference_key_not_exposed(node: PostureNode, host: Any) -> None:
    """The API key is only in its root:llm file: never in argv, an environment or the unit."""
    got = run_python(host, _KEY_PROBE, {"config": CONFIG, "unit": UNIT})
    assert got["key"], (
        f"{node.name}: {CONFIG} has no api_key (test_inference_api_requires_key says more)"
    )
    states = file_states(host, [CONFIG_DIR, CONFIG])
    # the service reads the file as group llm: 0640 root:llm, nothing for others, no group write
    wrong = mode_findings(states[CONFIG_DIR], mode=0o750, owner="root", group=USER)
    wrong += mode_findings(states[CONFIG], mode=0o640, owner="root", group=USER)
    wrong += [f"the API key is in: {where}" for where in got["found"]]
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# Model files: owner, mode, sha256, mounts; the node's manifest; the pre-start check.
_MODELS_PROBE = r"""
import hashlib, json, os, stat, subprocess, sys
a = json.loads(sys.argv[1])
out = {"files": {}, "manifest": None, "mounts": []}
for name in a["files"]:
    p = os.path.join(a["dir"], name)
    try:
        st = os.stat(p)
    except OSError:
        out["files"][name] = None
        continue
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    mode = stat.S_IMODE(st.st_mode)
    out["files"][name] = {"uid": st.st_uid, "mode": mode, "sha256": h.hexdigest()}
try:
    with open(a["manifest"]) as f:
        out["manifest"] = [l.split() for l in f if l.strip()]
except OSError:
    pass
fm = subprocess.run(["findmnt", "-rn", "-o", "TARGET,OPTIONS", "-R", a["dir"]],
                    capture_output=True, text=True)
out["mounts"] = [l.split(" ", 1) for l in fm.stdout.splitlines()]
st = os.stat(a["dir"])
out["dir"] = {"uid": st.st_uid, "mode": stat.S_IMODE(st.st_mode)}
print(json.dumps(out))
"""


@pytest.mark.control(
    "MLSL-INF-02",
    owasp="LLM03, LLM04",
    atlas="AML.T0010.003, AML.T0018.002, AML.M0014",
)
def test_inference_models_match_manifest(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """Every served model is root-owned, read-only, and matches the spec's sha256 and manifest."""
    models = served_models(lab.spec)
    pinned = {m["file"]: m["sha256"] for m in models}
    got = run_python(
        host, _MODELS_PROBE, {"dir": MODELS_DIR, "files": sorted(pinned), "manifest": MANIFEST}
    )
    wrong = []
    for name, want in sorted(pinned.items()):
        f = got["files"][name]
        if f is None:
            wrong.append(f"{MODELS_DIR}/{name} is missing")
            continue
        if f["sha256"] != want:
            wrong.append(f"{name}: sha256 {f['sha256']}, the spec pins {want}")
        if f["uid"] != 0 or f["mode"] & 0o022:
            wrong.append(
                f"{name}: uid {f['uid']} mode {f['mode']:04o}, "
                "expected root-owned, writable by nobody else"
            )
    manifest = {entry[1]: entry[0] for entry in got["manifest"] or [] if len(entry) == 2}
    if manifest != pinned:
        wrong.append(f"{MANIFEST} lists {manifest or 'nothing'}, expected the spec's {pinned}")
    if got["dir"]["uid"] != 0 or got["dir"]["mode"] & 0o022:
        wrong.append(f"{MODELS_DIR} is uid {got['dir']['uid']} mode {got['dir']['mode']:04o}")
    writable = [target for target, opts in got["mounts"] if "ro" not in opts.split(",")]
    if not got["mounts"] or writable:
        wrong.append(
            f"mounts at or under {MODELS_DIR} not read-only: {writable or 'no mount at all'}"
        )
    states = file_states(host, [MANIFEST, VERIFY])
    wrong += mode_findings(states[MANIFEST], mode=0o644, owner="root", group="root")
    wrong += mode_findings(states[VERIFY], mode=0o755, owner="root", group="root")
    pre = host.check_output("systemctl show %s -p ExecStartPre", UNIT)
    if VERIFY not in pre:
        wrong.append(f"{UNIT} does not run {VERIFY} before it starts")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# Every file under the models directory: pickle by name or by content, and GGUF magic.
_PICKLE_PROBE = r"""
import json, os, sys, zipfile
a = json.loads(sys.argv[1])
found, magic = [], {}
for root, dirs, files in os.walk(a["dir"]):
    for name in dirs + files:
        p = os.path.join(root, name)
        rel = os.path.relpath(p, a["dir"])
        if name.lower().endswith(tuple(a["suffixes"])):
            found.append(f"{rel} (pickle-based suffix)")
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        with open(p, "rb") as f:
            head = f.read(4)
        magic[rel] = head[:4].hex()
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            found.append(f"{rel} (pickle protocol {head[1]} content)")
        elif head == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(p) as z:
                    inner = [n for n in z.namelist() if n.endswith((".pkl", "data.pkl"))]
            except (OSError, zipfile.BadZipFile):
                inner = []
            if inner:
                found.append(f"{rel} (zip with pickles: {inner[:3]})")
print(json.dumps({"found": sorted(set(found)), "magic": magic}))
"""


@pytest.mark.control("MLSL-INF-02", owasp="LLM03", atlas="AML.T0011.000, AML.T0010.003, AML.M0014")
def test_inference_no_pickle_models(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """No pickle-based file is in the models directory; every served model is GGUF."""
    got = run_python(host, _PICKLE_PROBE, {"dir": MODELS_DIR, "suffixes": list(PICKLE_SUFFIXES)})
    wrong = [f"{MODELS_DIR}/{f}" for f in got["found"]]
    gguf = b"GGUF".hex()
    for m in served_models(lab.spec):
        if got["magic"].get(m["file"]) != gguf:
            wrong.append(
                f"{MODELS_DIR}/{m['file']} is not GGUF (starts {got['magic'].get(m['file'])})"
            )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-INF-03", atlas="AML.T0049, AML.T0105")
def test_inference_unit_sandboxed(node: PostureNode, host: Any) -> None:
    """The model server's unit is sandboxed (no privileges, read-only system and models)."""
    wrong, props = sandbox_findings(host, UNIT, user=USER, read_only=(MODELS_DIR,))
    if props.get("ActiveState") != "active":
        wrong.append(f"{UNIT} is {props.get('ActiveState')}: its process could not be checked")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-INF-05", cis="5.4.2.7")
def test_inference_runs_as_dedicated_account(node: PostureNode, host: Any) -> None:
    """The model server runs as the dedicated system account llm, which cannot log in."""
    wrong = account_findings(host, USER)
    pid = host.check_output("systemctl show %s -p MainPID --value", UNIT).strip()
    user = (
        host.run("ps -o user= -p %s", pid).stdout.strip() if pid not in ("", "0") else "not running"
    )
    if user != USER:
        wrong.append(f"the server's main process runs as {user}, expected {USER}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
