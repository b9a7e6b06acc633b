"""Dataset snapshots on plain directories: copy, manifest, retention, restore, refusals."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from helpers.labs import derived_lab_text, write_lab
from mlseclab.cli import main
from mlseclab.targets.local.names import LocalNames
from mlseclab.targets.local.snapshots import (
    SnapshotError,
    SnapshotStore,
    listing,
)

T0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    d = tmp_path / "datasets" / "vectors"
    (d / "base" / "1").mkdir(parents=True)
    (d / "base" / "1" / "16384").write_bytes(b"\x01" * 8192)
    (d / "PG_VERSION").write_text("17\n", encoding="utf-8")
    (d / "current").symlink_to("base/1")
    (d / "pg_wal").mkdir(mode=0o700)
    d.chmod(0o750)
    return d


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "snapshots")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_take_copies_everything_and_writes_a_private_manifest(
    dataset: Path, store: SnapshotStore
) -> None:
    snap = store.take("vectors", dataset, reason="down", nodes=["vectordb-01"], now=T0)
    assert snap.id == "20250102T030405Z-down"
    assert snap.path == store.root / "vectors" / snap.id
    assert (snap.files, snap.bytes) == (2, 8192 + 3)
    assert listing(snap.data) == listing(dataset)  # owners, modes, times, the symlink
    assert (snap.data / "current").readlink() == Path("base/1")
    assert _mode(snap.data) == 0o750 and _mode(snap.data / "pg_wal") == 0o700
    for private in (store.root, store.root / "vectors", snap.path):
        assert _mode(private) == 0o700, private
    manifest = json.loads((snap.path / "manifest.json").read_text(encoding="utf-8"))
    assert _mode(snap.path / "manifest.json") == 0o600
    assert manifest["dataset"] == "vectors"
    assert manifest["reason"] == "down"
    assert manifest["nodes"] == ["vectordb-01"]
    assert manifest["created"] == "2025-01-02T03:04:05.000000+00:00"
    assert (manifest["files"], manifest["bytes"]) == (2, 8195)
    assert manifest["listing_sha256"] == listing(dataset).sha256
    assert dataset.is_dir()  # a copy: the dataset is still there
    assert store.find() == [snap]


def test_a_snapshot_is_a_copy_not_a_link(dataset: Path, store: SnapshotStore) -> None:
    snap = store.take("vectors", dataset, reason="down", now=T0)
    live = dataset / "base" / "1" / "16384"
    with live.open("r+b") as fh:  # an in-place write, as an editor keeping links does
        fh.write(b"\xff")
    live.chmod(0o600)
    kept = snap.data / "base" / "1" / "16384"
    assert kept.read_bytes() == b"\x01" * 8192
    assert kept.stat().st_ino != live.stat().st_ino
    store.verify(snap)  # still what the manifest says


def test_listing_sees_content_size_mode_and_link_changes(dataset: Path) -> None:
    before = listing(dataset)
    (dataset / "PG_VERSION").chmod(0o600)
    assert listing(dataset) != before
    (dataset / "PG_VERSION").chmod(stat.S_IMODE(0o644))
    (dataset / "current").unlink()
    (dataset / "current").symlink_to("base")
    assert listing(dataset).sha256 != before.sha256
    assert listing(dataset).files == before.files


def test_ids_are_unique_within_one_second(dataset: Path, store: SnapshotStore) -> None:
    a = store.take("vectors", dataset, reason="down", now=T0)
    b = store.take("vectors", dataset, reason="down", now=T0)
    assert (a.id, b.id) == ("20250102T030405Z-down", "20250102T030405Z-down.2")


def test_retention_keeps_the_newest(dataset: Path, store: SnapshotStore) -> None:
    taken = [store.take("vectors", dataset, reason="rebuild", now=_at(i)) for i in range(5)]
    pruned = store.prune("vectors", 3)
    assert [s.id for s in pruned] == [s.id for s in taken[:2]]
    assert [s.id for s in store.find("vectors")] == [s.id for s in taken[2:]]
    assert not taken[0].path.exists()
    assert [s.id for s in store.prune("vectors", 0)] == [s.id for s in taken[2:4]]
    assert [s.id for s in store.find("vectors")] == [taken[4].id]  # never below one


def test_retention_is_per_dataset(dataset: Path, store: SnapshotStore, tmp_path: Path) -> None:
    models = tmp_path / "datasets" / "models"
    models.mkdir()
    (models / "m.gguf").write_bytes(b"GGUF")
    store.take("models", models, reason="down", now=_at(0))
    for i in range(3):
        store.take("vectors", dataset, reason="down", now=_at(i + 1))
    store.prune("vectors", 1)
    assert [s.dataset for s in store.find()] == ["models", "vectors"]


def test_an_interrupted_copy_is_never_listed_and_is_cleaned_up(
    dataset: Path, store: SnapshotStore
) -> None:
    partial = store.root / "vectors" / ".20250101T000000Z-down.partial"
    (partial / "data").mkdir(parents=True)
    unfinished = store.root / "vectors" / "20250101T000000Z-down"
    unfinished.mkdir()  # no manifest: not a snapshot mlseclab finished
    assert store.find() == []
    store.take("vectors", dataset, reason="down", now=T0)
    assert not partial.exists()
    assert [s.id for s in store.find()] == ["20250102T030405Z-down"]
    store.prune("vectors", 1)
    assert unfinished.exists()  # pruning only removes what it can name


def test_restore_puts_the_snapshot_back_and_keeps_what_was_there(
    dataset: Path, store: SnapshotStore
) -> None:
    snap = store.take("vectors", dataset, reason="down", now=T0)
    original = listing(dataset)
    (dataset / "PG_VERSION").unlink()
    (dataset / "new-table").write_bytes(b"rows")
    changed = listing(dataset)
    restored, pre = store.restore("vectors", snap.id, dataset, nodes=["vectordb-01"])
    assert restored == snap
    assert listing(dataset) == original
    assert (dataset / "PG_VERSION").read_text(encoding="utf-8") == "17\n"
    assert pre is not None and pre.reason == "pre-restore"
    assert listing(pre.data) == changed  # moved aside, not lost
    assert pre.nodes == ("vectordb-01",)
    store.verify(snap)  # the snapshot itself is untouched: it can be restored again
    assert not (dataset.parent / ".vectors.restoring").exists()
    assert [s.reason for s in store.find("vectors")] == ["down", "pre-restore"]


def test_restore_into_a_missing_dataset(dataset: Path, store: SnapshotStore) -> None:
    snap = store.take("vectors", dataset, reason="purge", now=T0)
    original = listing(dataset)
    import shutil

    shutil.rmtree(dataset)
    restored, pre = store.restore("vectors", snap.id, dataset)
    assert pre is None and restored.id == snap.id
    assert listing(dataset) == original


def test_restore_refuses_an_unknown_id_naming_the_valid_ones(
    dataset: Path, store: SnapshotStore
) -> None:
    a = store.take("vectors", dataset, reason="down", now=_at(0))
    b = store.take("vectors", dataset, reason="rebuild", now=_at(1))
    before = listing(dataset)
    for bad in ("20990101T000000Z-down", "../../etc", a.id + "/data"):
        with pytest.raises(SnapshotError) as err:
            store.restore("vectors", bad, dataset)
        assert str(err.value) == (
            f"dataset vectors has no snapshot {bad!r}; its snapshots: {b.id}, {a.id}"
        )
    with pytest.raises(SnapshotError, match=r"dataset models has no snapshots \(in "):
        store.restore("models", a.id, dataset)
    assert listing(dataset) == before
    assert len(store.find()) == 2


def test_restore_refuses_a_snapshot_changed_after_it_was_taken(
    dataset: Path, store: SnapshotStore
) -> None:
    snap = store.take("vectors", dataset, reason="down", now=T0)
    (snap.data / "PG_VERSION").write_text("16\n", encoding="utf-8")
    before = listing(dataset)
    with pytest.raises(SnapshotError, match="was changed after it was taken"):
        store.restore("vectors", snap.id, dataset)
    assert listing(dataset) == before
    assert [s.id for s in store.find()] == [snap.id]  # no pre-restore snapshot either


def test_move_renames_the_dataset_in(dataset: Path, store: SnapshotStore) -> None:
    before = listing(dataset)
    inode = dataset.stat().st_ino
    snap = store.take("vectors", dataset, reason="pre-restore", move=True, now=T0)
    assert not dataset.exists()
    assert snap.data.stat().st_ino == inode
    assert listing(snap.data) == before


def test_no_room_is_refused_before_anything_happens(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10, 5, 5))  # type: ignore[attr-defined]
    with pytest.raises(SnapshotError, match=r"no room for the snapshots \(models 1\.0 GiB"):
        store.check_space({"models": 1 << 30})
    assert not store.root.exists()
    store.check_space({"models": 0})  # nothing to copy: nothing to check


# -- the commands' refusals, before they touch a lab --------------------------------


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_lab(tmp_path, derived_lab_text("snapunit", 82, tmp_path / "data"))


def test_rebuild_refuses_an_unknown_node(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rebuild", "-f", str(spec), "rag-01", "infernce-01"]) == 1
    err = capsys.readouterr().err
    assert f"{spec}: lab snapunit has no node 'infernce-01'; " in err
    assert (
        "its nodes: gateway-01, inference-01, vectordb-01, rag-01, obs-01; "
        "did you mean 'inference-01'?"
    ) in err


def test_restore_refuses_an_unknown_dataset(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["restore", "-f", str(spec), "vector", "x", "--yes"]) == 1
    err = capsys.readouterr().err
    assert "lab snapunit has no dataset 'vector'; " in err
    assert "its datasets: models, vectors, corpora, logs; did you mean 'vectors'?" in err


def test_restore_refuses_an_unknown_snapshot(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = LocalNames("snapunit", tmp_path / "data")
    ds = names.dataset_dir("models")
    ds.mkdir(parents=True)
    (ds / "SHA256SUMS").write_text("", encoding="utf-8")
    snap = SnapshotStore(names.snapshots_dir).take("models", ds, reason="down", now=T0)
    assert main(["restore", "-f", str(spec), "models", "latest", "--yes"]) == 1
    err = capsys.readouterr().err
    assert f"dataset models has no snapshot 'latest'; its snapshots: {snap.id}" in err


def test_restore_without_yes_asks_and_changes_nothing(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = LocalNames("snapunit", tmp_path / "data")
    ds = names.dataset_dir("models")
    ds.mkdir(parents=True)
    snap = SnapshotStore(names.snapshots_dir).take("models", ds, reason="down", now=T0)
    (ds / "new").write_text("x", encoding="utf-8")
    assert main(["restore", "-f", str(spec), "models", snap.id]) == 1  # stdin is no terminal
    assert "restore was not confirmed; nothing was changed" in capsys.readouterr().err
    assert (ds / "new").exists()


def test_snapshots_lists_them(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["snapshots", "-f", str(spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["snapshots"] == []
    names = LocalNames("snapunit", tmp_path / "data")
    ds = names.dataset_dir("models")
    ds.mkdir(parents=True)
    (ds / "m.gguf").write_bytes(b"GGUF" * 256)
    snap = SnapshotStore(names.snapshots_dir).take(
        "models", ds, reason="down", nodes=["inference-01"], now=T0
    )
    assert main(["snapshots", "-f", str(spec), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["snapshots"]
    assert listed == [snap.as_json()]
    assert main(["snapshots", "-f", str(spec)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if snap.id in line)
    assert "models" in row and " d ago" in row and "down" in row and "1.0 KiB" in row
