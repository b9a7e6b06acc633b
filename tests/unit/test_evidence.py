"""`mlseclab evidence`: the archive and its check, secrets left out, --since, the refusals,
and a whole collection against nodes whose SSH is faked by a shell on this host."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.labs import derived_lab_text, write_lab
from mlseclab.cli import main
from mlseclab.errors import ERROR, FINDINGS, OK, USAGE
from mlseclab.evidence import collect
from mlseclab.evidence.archive import (
    INDEX,
    MANIFEST,
    ArchiveWriter,
    NotEvidence,
    parse_since,
    secret_reason,
    verify_archive,
)
from mlseclab.targets.local.snapshots import SnapshotStore

NOW = dt.datetime(2026, 12, 6, 4, 0, 0, tzinfo=dt.UTC)
TOP = "evidence-unit-20261206T040000Z"
SECRET = b"SECRET-MARKER-do-not-collect-7f3a"

# -- --since -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("2h", NOW - dt.timedelta(hours=2)),
        ("1d", NOW - dt.timedelta(days=1)),
        ("1h30m", NOW - dt.timedelta(minutes=90)),
        ("90s", NOW - dt.timedelta(seconds=90)),
        ("2026-12-06T03:00:00Z", dt.datetime(2026, 12, 6, 3, tzinfo=dt.UTC)),
        ("2026-12-06 04:30+02:00", dt.datetime(2026, 12, 6, 2, 30, tzinfo=dt.UTC)),
        ("2026-12-05", dt.datetime(2026, 12, 5).astimezone().astimezone(dt.UTC)),
    ],
)
def test_since_takes_an_age_or_an_iso_time(text: str, expected: dt.datetime) -> None:
    got = parse_since(text, NOW)
    assert got == expected and got.tzinfo == dt.UTC


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("yesterday-ish", "'yesterday-ish' is not a time; give an age (30m, 2h, 1d, 1h30m)"),
        ("", "'' is not a time"),
        ("5x", "'5x' is not a time"),
        ("2026-12-07T00:00Z", "'2026-12-07T00:00Z' is in the future (2026-12-07 00:00:00 UTC)"),
    ],
)
def test_since_refuses_what_is_not_a_past_time(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_since(text, NOW)


def test_a_bad_since_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_lab(tmp_path, derived_lab_text("unit", 83, tmp_path / "data"))
    assert main(["evidence", "-f", str(spec), "--since", "soon"]) == USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: mlseclab evidence")
    assert err.splitlines()[-1] == (
        "mlseclab evidence: error: argument --since: 'soon' is not a time; give an age "
        "(30m, 2h, 1d, 1h30m) or an ISO 8601 time (2026-12-06T04:00, 2026-12-06 04:00:00Z, "
        "2026-12-06T05:00+01:00; without a zone it is local time)"
    )


# -- what is never collected ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/etc/mlseclab/rag/secrets/db-password",
        "/etc/mlseclab/inference/credentials/api",
        ".mlseclab/reference/secrets/ca.crt",
        "nodes/rag-01.key",
        "inference-api-key",
        "db-owner-password",
        "rag-signing-key",
        "api-keys.txt",
        "clients/operator.token",
        "home/.ssh/authorized_keys",
        "ssh/id_ed25519",
        "etc/ssh/ssh_host_ed25519_key",
        "server.pem",
        "x/private/anything",
        "etc/shadow",
        ".env",
        "app.env",
    ],
)
def test_secret_paths_are_named(path: str) -> None:
    assert secret_reason(path), path


@pytest.mark.parametrize(
    "path",
    [
        "report.json",
        "attack.html",
        "docs/monkey.md",
        "id_ed25519.pub",
        "keyboard.md",
        "ca.crt",
        "restricted/key-rotation-runbook.md",
        "password-policy.md",
        "tokenizer.json",
    ],
)
def test_ordinary_paths_are_not_secret(path: str) -> None:
    assert secret_reason(path) is None


# -- the archive ----------------------------------------------------------------------


def _archive(tmp_path: Path, members: dict[str, bytes] | None = None) -> Path:
    writer = ArchiveWriter(TOP, NOW.timestamp())
    for rel, data in (
        members or {"nodes/a/journal.jsonl": b'{"M":1}\n', "host/x.json": b"{}"}
    ).items():
        writer.add(rel, data)
    path = tmp_path / f"{TOP}.tar.gz"
    path.write_bytes(writer.finish({"format": "mlseclab-evidence/1", "lab": "unit"}))
    return path


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}  # type: ignore[union-attr]


def _repack(
    source: Path,
    dest: Path,
    change: Callable[[tarfile.TarInfo, bytes], tuple[tarfile.TarInfo, bytes] | None] | None = None,
    extra: list[tuple[tarfile.TarInfo, bytes]] = (),  # type: ignore[assignment]
) -> Path:
    """A copy of the archive with members changed, dropped (None) or added."""
    with tarfile.open(source) as src, tarfile.open(dest, "w:gz") as out:
        for m in src:
            data = src.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            done = change(m, data) if change else (m, data)
            if done is not None:
                info, body = done
                info.size = len(body)
                out.addfile(info, io.BytesIO(body))
        for info, body in extra:
            info.size = len(body)
            out.addfile(info, io.BytesIO(body) if info.isfile() else None)
    return dest


def test_round_trip_is_intact_and_sha256sum_agrees(tmp_path: Path) -> None:
    path = _archive(tmp_path)
    check = verify_archive(path)
    assert check.intact and check.top == TOP
    assert (check.members, check.listed) == (3, 3)  # two items and evidence.json
    members = _members(path)
    assert set(members) == {
        f"{TOP}/{n}" for n in ("nodes/a/journal.jsonl", "host/x.json", INDEX, MANIFEST)
    }
    with tarfile.open(path) as tf:
        for m in tf:
            assert m.isfile() and m.mode == 0o600 and (m.uid, m.gid) == (0, 0)
    manifest = members[f"{TOP}/{MANIFEST}"].decode()
    assert f"{hashlib.sha256(b'{}').hexdigest()}  host/x.json\n" in manifest
    if shutil.which("sha256sum"):
        out = tmp_path / "x"
        with tarfile.open(path) as tf:
            tf.extractall(out, filter="data")
        done = subprocess.run(
            ["sha256sum", "-c", "--strict", MANIFEST],
            cwd=out / TOP,
            capture_output=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout


def test_a_changed_byte_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _archive(tmp_path)

    def flip(m: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
        if m.name.endswith("journal.jsonl"):
            data = bytes([data[0] ^ 1]) + data[1:]
        return m, data

    bad = _repack(path, tmp_path / "bad.tar.gz", flip)
    check = verify_archive(bad)
    assert check.changed == ["nodes/a/journal.jsonl"] and not check.intact
    assert (check.missing, check.extra, check.unsafe) == ([], [], [])
    assert main(["evidence", "verify", str(bad)]) == FINDINGS
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "  changed: nodes/a/journal.jsonl"
    assert err[1] == (
        f"error: evidence verify: {bad}: NOT intact (1 changed); 3 of 3 listed members checked"
    )
    assert main(["evidence", "verify", str(path)]) == OK
    assert capsys.readouterr().err == (
        f"evidence verify: {path}: intact; 3 members match MANIFEST.sha256 (lab unit, "
        "collected ?)\n"
    )


def test_extra_and_missing_members_are_named(tmp_path: Path) -> None:
    path = _archive(tmp_path)
    planted = tarfile.TarInfo(f"{TOP}/nodes/a/planted.txt")
    dropped = _repack(
        path,
        tmp_path / "x.tar.gz",
        lambda m, d: None if m.name.endswith("host/x.json") else (m, d),
        [(planted, b"not collected")],
    )
    check = verify_archive(dropped)
    assert check.extra == ["nodes/a/planted.txt"]
    assert check.missing == ["host/x.json"]
    assert not check.changed and not check.intact


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, b""


def test_unsafe_member_names_are_named_and_nothing_is_extracted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _archive(tmp_path)
    evil = [
        (tarfile.TarInfo("/tmp/evidence-abs"), b"x"),
        (tarfile.TarInfo(f"{TOP}/../escape"), b"x"),
        _special(f"{TOP}/link", tarfile.SYMTYPE, "/etc/shadow"),
        _special(f"{TOP}/hard", tarfile.LNKTYPE, "/etc/passwd"),
        _special(f"{TOP}/dev", tarfile.CHRTYPE),
        _special(f"{TOP}/fifo", tarfile.FIFOTYPE),
        (tarfile.TarInfo(f"{TOP}/host/x.json"), b"a second copy"),
    ]
    bad = _repack(path, tmp_path / "evil.tar.gz", extra=evil)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tarfile.TarFile, "extractall", None)  # verify never extracts
    monkeypatch.setattr(tarfile.TarFile, "extract", None)
    check = verify_archive(bad)
    assert check.unsafe == [
        "/tmp/evidence-abs: absolute path",
        f"{TOP}/../escape: parent reference (..)",
        f"{TOP}/link: symbolic link to '/etc/shadow'",
        f"{TOP}/hard: hard link to '/etc/passwd'",
        f"{TOP}/dev: device file",
        f"{TOP}/fifo: FIFO",
        f"{TOP}/host/x.json: duplicate member (a later copy would replace the first)",
    ]
    assert not check.changed and not check.intact
    assert not Path("/tmp/evidence-abs").exists() and not (tmp_path / "escape").exists()
    assert main(["evidence", "verify", str(bad)]) == FINDINGS
    assert f"  unsafe: {TOP}/link: symbolic link to '/etc/shadow'" in capsys.readouterr().err


def test_what_is_not_an_evidence_archive_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n", encoding="utf-8")
    plain_tar = tmp_path / "plain.tar.gz"
    with tarfile.open(plain_tar, "w:gz") as tf:
        tf.add(text, arcname="notes.txt")
    for path, why in (
        (text, "not a tar archive: "),
        (plain_tar, f"no {MANIFEST} in it"),
        (tmp_path / "absent.tar.gz", ""),
    ):
        assert main(["evidence", "verify", str(path)]) == ERROR
        err = capsys.readouterr().err
        if why:
            assert err.startswith(f"error: {path}: not an evidence archive (")
            assert why in err
        else:
            assert err == f"error: {path}: no such file\n"
    with pytest.raises(NotEvidence):
        verify_archive(plain_tar)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["evidence", "verify"],
            "evidence verify takes one ARCHIVE: mlseclab evidence verify ARCHIVE",
        ),
        (["evidence", "verify", "a", "b"], "evidence verify takes one ARCHIVE"),
        (
            ["evidence", "verify", "a", "--since", "1h"],
            "--since: for collecting, not for evidence verify",
        ),
    ],
)
def test_evidence_verify_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == USAGE
    assert f"mlseclab evidence: error: {message}" in capsys.readouterr().err


# -- collecting --------------------------------------------------------------------


def _spec_text(data: Path, model: bytes) -> str:
    text = derived_lab_text("unit", 83, data)
    models = (
        "models:\n"
        "  tiny:\n"
        "    source: file:/srv/import/tiny.gguf\n"
        f"    sha256: {hashlib.sha256(model).hexdigest()}\n"
        "    task: completion\n"
        "  other:\n"
        "    source: file:/srv/import/other.gguf\n"
        f"    sha256: {'e' * 64}\n"
        "    task: embedding\n"
    )
    text, n = re.subn(r"(?ms)^models:\n.*?(?=^# Who may call)", models + "\n", text)
    assert n == 1
    return text


RULESET = {
    "nftables": [
        {"rule": {"chain": "input", "comment": "dropped", "expr": [{"counter": {"packets": 7}}]}},
        {"rule": {"chain": "input", "expr": [{"counter": {"packets": 3}}, {"accept": None}]}},
    ]
}


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A lab that looks up: its state (ssh_config, state.json), datasets with a model,
    a corpus, a secret and a big file, a snapshot, reports; nodes answer through a
    fake ssh that runs the real wrapper around canned output in a local shell."""
    data = tmp_path / "data"
    model = b"GGUF tiny model"
    spec = write_lab(tmp_path, _spec_text(data, model))
    home = tmp_path / "state" / "unit"
    (home / "ssh").mkdir(parents=True, mode=0o700)
    (home / "ssh_config").write_text("# fake\n", encoding="utf-8")
    (home / "state.json").write_text('{"target": "local"}\n', encoding="utf-8")
    (home / "secrets").mkdir(mode=0o700)
    (home / "secrets" / "ca.key").write_bytes(SECRET)

    ds = data / "unit" / "datasets"
    (ds / "models").mkdir(parents=True)
    (ds / "models" / "tiny.gguf").write_bytes(model)
    (ds / "corpora" / "public").mkdir(parents=True)
    (ds / "corpora" / "public" / "note.md").write_text("a note\n", encoding="utf-8")
    (ds / "corpora" / "db-password").write_bytes(SECRET)
    (ds / "corpora" / "secrets").mkdir()
    (ds / "corpora" / "secrets" / "x").write_bytes(SECRET)
    (ds / "corpora" / "api.key").write_bytes(SECRET)
    (ds / "corpora" / "link.md").symlink_to("public/note.md")
    (ds / "vectors").mkdir()
    (ds / "vectors" / "big.bin").write_bytes(b"v" * 5000)
    SnapshotStore(data / "unit" / "snapshots").take(
        "corpora", ds / "corpora", reason="down", nodes=["rag-01"]
    )

    reports = tmp_path / "reports" / "unit"
    for name, files in {
        "20261201-100000": {"report.json": b'{"old": true}'},
        "20261202-100000": {"report.json": b'{"new": true}', "api-keys.txt": SECRET},
        "20261202-100000-verify-2": {"report.json": b'{"newest": true}', "api-keys.txt": SECRET},
        "20261203-100000-drift": {"report.json": b"{}", "report.html": b"<html>"},
        "20261204-100000-attack": {"attack.json": b"{}"},
        "20261205-100000-evidence": {"x.tar.gz": b"not a report"},
    }.items():
        (reports / name).mkdir(parents=True)
        for f, body in files.items():
            (reports / name / f).write_bytes(body)
    (reports / "20261204-100000-attack" / "secrets").mkdir()
    (reports / "20261204-100000-attack" / "secrets" / "k").write_bytes(SECRET)

    canned = tmp_path / "canned"
    canned.mkdir()
    journal = b"".join(b'{"MESSAGE":"line %d","_HOSTNAME":"n"}\n' % i for i in range(400))
    outputs = {  # the first key found in a command picks its output
        "command -v last": b"mlseclab pts/0 10.66.255.1\n",
        "date -u": b"2026-12-06T04:00:00Z\nnode\n",
        "journalctl": journal,
        "nft -j": json.dumps(RULESET).encode(),
        "ps -eww": b"USER PID PPID STARTED STAT COMMAND\nroot 1 0 Sun Dec 6 sbin/init\n",
        "ss -tulpn": b'tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=1,fd=3))\n',
        "systemctl list-units": b"0 loaded units listed.\n",
    }
    for key, body in outputs.items():
        (canned / key.split()[0].replace("-", "")).write_bytes(body)
    calls: list[tuple[str, str]] = []
    down = {"obs-01"}
    failing = {("rag-01", "systemctl")}

    def fake_ssh(
        config: Path | str, node: str, command: str, *, timeout: float = 600
    ) -> subprocess.CompletedProcess[bytes]:
        calls.append((node, command))
        if node in down:
            return subprocess.CompletedProcess([], 255, b"", b"ssh: connect to host: timed out\n")
        m = re.fullmatch(
            r'\{ (.*); echo "mlseclab-exit=\$\?" >&2; \} \| head -c \d+', command, re.S
        )
        assert m, command
        inner = m.group(1)
        key = next(k for k in outputs if k in inner)
        fake = f"cat {canned / key.split()[0].replace('-', '')}"
        if (node, key.split()[0]) in failing:
            fake = "sh -c 'echo Failed to connect to bus >&2; exit 3'"
        return subprocess.run(
            ["sh", "-c", command.replace(inner, fake, 1)], capture_output=True, check=False
        )

    def fake_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        assert cmd[:4] == ["ip", "netns", "exec", "mlsl-unit-router"], cmd
        return subprocess.CompletedProcess(cmd, 0, json.dumps(RULESET), "")

    monkeypatch.setattr(collect, "ssh_bytes", fake_ssh)
    monkeypatch.setattr(collect, "run", fake_run)
    monkeypatch.setattr(collect, "JOURNAL_LIMIT", 1000)
    monkeypatch.setattr(collect, "DATASET_FILE_LIMIT", 4096)
    return {"spec": spec, "reports": tmp_path / "reports", "calls": calls, "down": down}


def _collect(
    lab: dict[str, Any], capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    code = main(
        ["evidence", "-f", str(lab["spec"]), "--reports", str(lab["reports"]), "--json", *extra]
    )
    captured = capsys.readouterr()
    assert captured.out.startswith("{"), captured.err
    return code, json.loads(captured.out)


def test_collect_writes_a_private_archive_that_verifies(
    lab: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, meta = _collect(lab, capsys, "--since", "2h")
    assert code == FINDINGS  # obs-01 did not answer, a model differs from its pin
    archive = Path(meta["archive"])
    assert archive.parent.name.endswith("-evidence")
    assert archive.parent.parent == lab["reports"] / "unit"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert stat.S_IMODE(archive.parent.stat().st_mode) == 0o700
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == meta["archive_sha256"]
    side = archive.with_name(archive.name + ".sha256").read_text(encoding="utf-8")
    assert side == f"{meta['archive_sha256']}  {archive.name}\n"
    assert main(["evidence", "verify", str(archive)]) == OK
    assert f"MANIFEST.sha256; its sha256 matches {archive.name}.sha256 (lab unit" in (
        capsys.readouterr().err
    )

    members = _members(archive)
    top = archive.name.removesuffix(".tar.gz")
    rel = {name.removeprefix(f"{top}/"): body for name, body in members.items()}
    for node in ("gateway-01", "inference-01", "vectordb-01", "rag-01"):
        for f in (
            "node.txt",
            "journal.jsonl",
            "nft-ruleset.json",
            "processes.txt",
            "listeners.txt",
            "logins.txt",
        ):
            assert f"nodes/{node}/{f}" in rel, (node, f)
    assert not [r for r in rel if r.startswith("nodes/obs-01/")]
    assert "nodes/rag-01/failed-units.txt" not in rel  # it failed with no output
    assert rel["nodes/rag-01/logins.txt"] == b"mlseclab pts/0 10.66.255.1\n"

    # the journal was cut on the node at the limit, at a line end, and said so
    journal = rel["nodes/gateway-01/journal.jsonl"]
    assert len(journal) <= 1000 and journal.endswith(b"\n")
    json.loads(journal.splitlines()[-1])
    items = {(i["source"], i["what"].split(" since ")[0]): i for i in meta["items"]}
    assert items[("gateway-01", "journal")]["status"] == "truncated"
    assert "cut at" in items[("gateway-01", "journal")]["note"]
    assert items[("rag-01", "failed units")]["status"] == "error"
    assert items[("rag-01", "failed units")]["error"] == "exit 3: Failed to connect to bus"
    assert meta["nodes"]["obs-01"]["answered"] is False
    assert (
        (meta["nodes"]["obs-01"]["error"])
        == "obs-01 did not answer over SSH: ssh exit 255: ssh: connect to host: timed out"
    )
    assert meta["summary"]["nodes_not_answering"] == ["obs-01"]
    # one try per node that does not answer, not one per command
    assert len([c for c in lab["calls"] if c[0] == "obs-01"]) == 1

    # read-only on the nodes: only the commands the collector lists were run
    since = meta["since"]
    assert since.endswith("+00:00") and meta["since_given"] == "2h"
    for _, command in lab["calls"]:
        assert not re.search(r"\b(rm|mv|tee|systemctl (start|stop|restart)|>\s*/)", command), (
            command
        )

    # host: models against their pins, datasets listed, reports and snapshots
    models = {m["model"]: m for m in meta["models"]}
    assert models["tiny"]["matches"] is True and models["other"]["found"] is None
    assert meta["summary"]["models_differing"] == ["other"]
    assert json.loads(rel["host/router-nft.json"]) == RULESET
    assert meta["drops"]["router"] == {"input/dropped": 7}
    assert meta["drops"]["gateway-01"] == {"input/dropped": 7}
    corpora = rel["host/datasets/corpora.sha256"].decode()
    assert corpora == f"{hashlib.sha256(b'a note' + bytes([10])).hexdigest()}  public/note.md\n"
    vectors = json.loads(rel["host/datasets/vectors.json"])
    assert vectors["skipped"] == [
        {"path": "big.bin", "size": 5000, "reason": "larger than 4096 bytes"}
    ]
    assert rel["host/datasets/models.sha256"].decode().endswith("  tiny.gguf\n")
    assert json.loads(rel["host/reports/20261202-100000-verify-2/report.json"]) == {"newest": True}
    assert "host/reports/20261203-100000-drift/report.html" in rel
    assert "host/reports/20261204-100000-attack/attack.json" in rel
    assert not [r for r in rel if "evidence/" in r or "20261201" in r]
    [snap] = json.loads(rel["host/snapshots.json"])
    assert snap["dataset"] == "corpora" and snap["reason"] == "down"
    assert f"host/snapshots/corpora/{snap['id']}/manifest.json" in rel
    assert rel["lab/lab.yaml"] == lab["spec"].read_bytes()


def test_secrets_are_listed_by_name_and_never_copied_or_hashed(
    lab: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The decision: a secret-looking file in a dataset or a report folder is named in
    evidence.json's `excluded` (with the reason) and never read: neither its bytes nor
    its sha256 are in the archive. The lab's secrets directory is never walked."""
    _, meta = _collect(lab, capsys)
    raw = Path(meta["archive"]).read_bytes()
    members = _members(Path(meta["archive"]))
    digest = hashlib.sha256(SECRET).hexdigest().encode()
    for name, body in members.items():
        assert SECRET not in body, name
        assert digest not in body, name
    assert SECRET not in raw
    assert {e["path"]: e["reason"] for e in meta["excluded"]} == {
        "datasets/corpora/api.key": "a private key or keystore file name: not read",
        "datasets/corpora/db-password": "a name that says key, password, secret or token: not read",
        "datasets/corpora/secrets/": "a secrets directory: not entered",
        "host/reports/20261202-100000-verify-2/api-keys.txt": (
            "a name that says key, password, secret or token: not copied"
        ),
        "host/reports/20261204-100000-attack/secrets/": "a secrets directory: not entered",
    }
    assert not [m for m in members if "secrets" in m or "api-keys" in m or m.endswith(".key")]


def test_every_node_answering_and_every_pin_matching_is_ok(
    lab: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lab["down"].clear()
    spec = lab["spec"]
    spec.write_text(
        re.sub(r"(?ms)^  other:\n.*?task: embedding\n", "", spec.read_text(encoding="utf-8")),
        encoding="utf-8",
    )
    code, meta = _collect(lab, capsys, "gateway-01", "--output", str(tmp_path / "out"))
    assert code == OK, meta["summary"]
    assert list(meta["nodes"]) == ["gateway-01"]
    assert Path(meta["archive"]).parent == tmp_path / "out"
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700


def test_unknown_node_and_a_lab_that_is_not_up_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_lab(tmp_path, derived_lab_text("unit", 83, tmp_path / "data"))
    assert main(["evidence", "-f", str(spec), "rag-01", "infernce-01"]) == ERROR
    assert capsys.readouterr().err == (
        f"error: {spec}: lab unit has no node 'infernce-01'; its nodes: gateway-01, "
        "inference-01, vectordb-01, rag-01, obs-01; did you mean 'inference-01'?\n"
    )
    assert main(["evidence", "-f", str(spec)]) == ERROR
    state = tmp_path / "state" / "unit" / "ssh_config"
    assert capsys.readouterr().err == (
        f"error: lab unit is not up (no {state}), so there is no evidence to collect; "
        "`mlseclab status` shows what runs\n"
    )


def test_an_output_that_is_not_a_directory_is_refused_before_collecting(
    lab: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    argv = ["evidence", "-f", str(lab["spec"]), "-o", str(tmp_path / "afile")]
    assert main(argv) == ERROR
    assert capsys.readouterr().err == (
        f"error: --output {tmp_path / 'afile'}: not a directory (a file or a link is there); "
        "name a directory, or a new one\n"
    )
    assert lab["calls"] == []


def test_a_node_that_hangs_is_asked_once(
    lab: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlseclab.errors import LabError

    fake = collect.ssh_bytes

    def hangs(config: Path | str, node: str, command: str, *, timeout: float = 600) -> Any:
        if node == "rag-01":
            lab["calls"].append((node, command))
            raise LabError(f"{node}: `{command}` did not finish in {timeout:.0f}s")
        return fake(config, node, command, timeout=timeout)

    monkeypatch.setattr(collect, "ssh_bytes", hangs)
    code, meta = _collect(lab, capsys, "rag-01", "gateway-01")
    assert code == FINDINGS
    assert meta["nodes"]["rag-01"]["answered"] is False
    assert meta["nodes"]["rag-01"]["error"].endswith("did not finish in 30s")
    assert meta["nodes"]["gateway-01"]["answered"] is True
    assert len([c for c in lab["calls"] if c[0] == "rag-01"]) == 1


def test_an_archive_rewritten_whole_is_caught_by_the_sha256_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rewritten archive with a fresh manifest is intact inside; the sha256 that
    `evidence` wrote beside it is what tells."""
    path = _archive(tmp_path)
    side = path.with_name(path.name + ".sha256")
    side.write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n", "utf-8")
    assert verify_archive(path).sidecar == "matches"
    (tmp_path / "forged").mkdir()
    forged = _archive(tmp_path / "forged", {"nodes/a/journal.jsonl": b"nothing happened\n"})
    path.write_bytes(forged.read_bytes())
    check = verify_archive(path)
    assert check.sidecar == "differs" and not check.intact and not check.changed
    assert main(["evidence", "verify", str(path)]) == FINDINGS
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"  changed: the archive itself: its sha256 is not the one in {side.name}"
    assert err[1] == (
        f"error: evidence verify: {path}: NOT intact (1 archive sha256 differs); "
        "2 of 2 listed members checked"
    )
