"""The RAG node: its service account, its two credentials, its sandboxed unit, its peers.

The credentials are compared with the operator's copies by sha256 only: the
node reports the hash of each file's content, the check hashes the operator's
secret, and neither secret is ever in a message.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from service_state import (
    account_findings,
    file_states,
    mode_findings,
    run_python,
    sandbox_findings,
    secrets,
)

from mlseclab.posture.plugin import PostureLab, PostureNode

pytestmark = pytest.mark.roles("rag")

UNIT = "mlseclab-rag.service"
USER = "rag"
CONFIG_DIR = "/etc/mlseclab/rag"
CREDENTIALS_DIR = f"{CONFIG_DIR}/credentials"
STATE_DIR = "/var/lib/mlseclab-rag"
# credential name (also the file name) -> the operator's secret it must be
CREDENTIALS = {"db-password": "db-query-password", "inference-api-key": "inference-api-key"}
NOT_HERE = ("db-ingest-password", "db-owner-password")  # write and owner credentials


@pytest.mark.control("MLSL-RAG-01", cis="5.4.2.7")
def test_rag_service_account(node: PostureNode, host: Any) -> None:
    """The RAG service runs as a system account that cannot log in, with a private state dir."""
    wrong = account_findings(host, USER)
    user = host.check_output("systemctl show %s -p User --value", UNIT).strip()
    if user != USER:
        wrong.append(f"{UNIT} runs as {user or 'root'}, expected {USER}")
    wrong += mode_findings(file_states(host, [STATE_DIR])[STATE_DIR], mode=0o700, owner=USER)
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


# The credential directory's files with owner, mode and the sha256 of their stripped content.
_CREDENTIALS_PROBE = r"""
import grp, hashlib, json, os, pwd, stat, sys
d = json.loads(sys.argv[1])
out = {}
for name in sorted(os.listdir(d)):
    p = os.path.join(d, name)
    st = os.lstat(p)
    with open(p, "rb") as f:
        digest = hashlib.sha256(f.read().strip()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
    out[name] = {"mode": stat.S_IMODE(st.st_mode), "owner": pwd.getpwuid(st.st_uid).pw_name,
                 "group": grp.getgrgid(st.st_gid).gr_name, "sha256": digest}
print(json.dumps(out))
"""


def _secret_sha256(lab: PostureLab, name: str) -> str:
    path = secrets(lab).service(name)
    assert path.is_file(), f"{path} is missing on the operator's host"
    return hashlib.sha256(path.read_bytes().strip()).hexdigest()


@pytest.mark.control("MLSL-RAG-02", owasp="LLM08", atlas="AML.T0055, AML.T0082")
def test_rag_credentials_root_only(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The RAG node holds only the read-only DB password and the inference key, 0600 root."""
    got = run_python(host, _CREDENTIALS_PROBE, CREDENTIALS_DIR)
    wrong = mode_findings(
        file_states(host, [CREDENTIALS_DIR])[CREDENTIALS_DIR], mode=0o700, owner="root"
    )
    if sorted(got) != sorted(CREDENTIALS):
        wrong.append(f"{CREDENTIALS_DIR} holds {sorted(got)}, expected {sorted(CREDENTIALS)}")
    forbidden = {_secret_sha256(lab, s): s for s in NOT_HERE}
    for name, f in sorted(got.items()):
        path = f"{CREDENTIALS_DIR}/{name}"
        if f["mode"] & ~0o600 or (f["owner"], f["group"]) != ("root", "root"):
            wrong.append(
                f"{path} is {f['mode']:04o} {f['owner']}:{f['group']}, expected 0600 root:root"
            )
        if f["sha256"] in forbidden:
            wrong.append(f"{path} is the {forbidden[f['sha256']]} (write access to the vector DB)")
        elif name in CREDENTIALS and f["sha256"] != _secret_sha256(lab, CREDENTIALS[name]):
            wrong.append(f"{path} is not the lab's {CREDENTIALS[name]}")
    # the service account itself cannot read them: systemd hands them over (LoadCredential)
    readable = host.run(
        'for f in %s/*; do runuser -u %s -- test -r "$f" && echo "$f"; done', CREDENTIALS_DIR, USER
    ).stdout.split()
    wrong += [f"{USER} can read {f}" for f in readable]
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


def _load_credentials(host: Any) -> dict[str, str]:
    """The unit's LoadCredential= pairs (systemctl show prints them as [unprintable])."""
    path = "/org/freedesktop/systemd1/unit/" + UNIT.replace("-", "_2d").replace(".", "_2e")
    out = host.check_output(
        "busctl --json=short get-property org.freedesktop.systemd1 %s "
        "org.freedesktop.systemd1.Service LoadCredential",
        path,
    )
    return {name: src for name, src in json.loads(out)["data"]}


@pytest.mark.control("MLSL-RAG-04", atlas="AML.T0055")
def test_rag_unit_sandboxed(node: PostureNode, host: Any) -> None:
    """The RAG unit is sandboxed and gets its credentials from systemd, not from files it owns."""
    wrong, _ = sandbox_findings(host, UNIT, user=USER)
    creds = _load_credentials(host)
    expected = {name: f"{CREDENTIALS_DIR}/{name}" for name in CREDENTIALS}
    if creds != expected:
        wrong.append(f"LoadCredential {creds}, expected {expected}")
    env = host.check_output("systemctl show %s -p Environment,EnvironmentFiles", UNIT)
    if any(word in env.lower() for word in ("password", "key", "secret", "token")):
        wrong.append(f"{UNIT} passes a credential-looking environment: {env.strip()[:200]}")
    assert not wrong, f"{node.name}: " + "; ".join(wrong)


@pytest.mark.control("MLSL-RAG-03", owasp="LLM08")
def test_rag_peers_verified_with_lab_ca(node: PostureNode, host: Any, lab: PostureLab) -> None:
    """The RAG service verifies the vector DB against the lab CA (verify-full) as rag_query."""
    settings = json.loads(host.check_output("cat %s/settings.json", CONFIG_DIR))
    vdb = settings.get("vectordb", {})
    wrong = []
    if vdb.get("sslmode") != "verify-full":
        wrong.append(f"vectordb sslmode {vdb.get('sslmode')!r}, expected 'verify-full'")
    vectordb = [n for n in lab.nodes() if n.role == "vectordb"]
    if vectordb and vdb.get("host") != vectordb[0].topo.service[0].ip:
        wrong.append(
            f"vectordb host {vdb.get('host')!r}, expected {vectordb[0].topo.service[0].ip}"
        )
    if vdb.get("user") != "rag_query":
        wrong.append(f"vectordb user {vdb.get('user')!r}, expected the read-only rag_query")
    ca_here = host.check_output("sha256sum %s/ca.crt", CONFIG_DIR).split()[0]
    if ca_here != hashlib.sha256(secrets(lab).ca_cert.read_bytes()).hexdigest():
        wrong.append(f"{CONFIG_DIR}/ca.crt is not the lab CA")
    wrong += mode_findings(
        file_states(host, [f"{CONFIG_DIR}/ca.crt"])[f"{CONFIG_DIR}/ca.crt"],
        mode=0o644,
        owner="root",
    )
    assert not wrong, f"{node.name}: " + "; ".join(wrong)
