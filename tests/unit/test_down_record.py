"""``down`` removes only the directories the lab's state says ``up`` made, inside the lab's
own directory and with no symbolic link on the way; the rest is left and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.labs import derived_lab_text, load_text
from mlseclab.errors import TargetError
from mlseclab.state import LabHome
from mlseclab.targets.local.target import MADE, LocalTarget
from mlseclab.topology import derive

NODES = ["gateway-01", "inference-01", "vectordb-01", "rag-01", "obs-01"]
DATASETS = ["models", "vectors", "corpora", "logs"]  # models, vectors, corpora: protected


@pytest.fixture
def target(tmp_path: Path) -> LocalTarget:
    spec = load_text(derived_lab_text("downunit", 83, tmp_path / "data"))
    home = LabHome("downunit", tmp_path / "state" / "downunit")
    home.ensure()
    return LocalTarget(spec, derive(spec), home)


def _up_dirs(target: LocalTarget, state: dict[str, object]) -> None:
    """The directories ``up`` makes, through the same recording call it uses."""
    for ds in DATASETS:
        target.make_dir(state, target.names.dataset_dir(ds), 0o750)
    target.make_dir(state, target.names.lab_dir)
    for node in NODES:
        target.make_dir(state, target.names.node_dir(node))
        (target.names.node_dir(node) / "upper").mkdir()


def test_up_records_each_directory_before_making_it(target: LocalTarget) -> None:
    state: dict[str, object] = {}
    _up_dirs(target, state)
    lab = target.names.lab_dir
    made = state[MADE]
    assert made[:3] == [str(lab), str(lab / "datasets"), str(lab / "datasets" / "models")]
    assert str(lab.parent) not in made  # the datasets root is the operator's
    assert json.loads(target.home.state_file.read_text(encoding="utf-8"))[MADE] == made
    assert not target.make_dir(state, target.names.dataset_dir("models"))  # exists: no-op
    assert state[MADE] == made


def test_down_removes_what_up_made_and_keeps_protected_data(target: LocalTarget) -> None:
    state: dict[str, object] = {}
    _up_dirs(target, state)
    (target.names.dataset_dir("models") / "m.gguf").write_bytes(b"GGUF")
    removed = target.remove_files(NODES, target.recorded(state), purge_data=False)
    assert removed == ["dataset logs"]
    assert not (target.names.lab_dir / "nodes").exists()
    assert (target.names.dataset_dir("models") / "m.gguf").exists()
    kept = json.loads(target.home.kept_file.read_text(encoding="utf-8"))
    assert str(target.names.dataset_dir("models")) in kept
    # the next up carries the record over, so a later purge removes the kept datasets
    assert target.recorded({}) == set(kept)
    removed = target.remove_files(NODES, target.recorded({}), purge_data=True)
    assert sorted(removed) == sorted(
        f"dataset {d} (protected, purged)" for d in ("models", "vectors", "corpora")
    )
    assert not target.names.lab_dir.exists()
    assert target.names.lab_dir.parent.is_dir()  # the datasets root stays
    assert not target.home.kept_file.exists()


def test_a_directory_the_state_does_not_record_is_left_and_reported(
    target: LocalTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    state: dict[str, object] = {}
    _up_dirs(target, state)
    theirs = target.names.dataset_dir("logs")
    state[MADE] = [p for p in state[MADE] if p != str(theirs)]  # type: ignore[attr-defined]
    (theirs / "keep.me").write_text("x", encoding="utf-8")
    removed = target.remove_files(NODES, target.recorded(state), purge_data=True)
    assert "dataset logs" not in removed
    assert (theirs / "keep.me").exists()
    err = capsys.readouterr().err
    assert f"left alone: dataset logs at {theirs}: the lab's state does not record" in err


def test_a_symlink_planted_in_the_lab_directory_is_not_followed(
    target: LocalTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state: dict[str, object] = {}
    _up_dirs(target, state)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x", encoding="utf-8")
    logs = target.names.dataset_dir("logs")
    logs.rmdir()
    logs.symlink_to(victim)  # recorded path, now a link out of the lab's directory
    target.remove_files(NODES, target.recorded(state), purge_data=True)
    assert (victim / "precious").exists()
    assert f"{logs} is a symbolic link" in capsys.readouterr().err
    datasets = target.names.lab_dir / "datasets"
    logs.unlink()
    datasets.rename(tmp_path / "moved")
    datasets.symlink_to(tmp_path / "moved")  # a link higher up
    assert target.why_kept(target.names.dataset_dir("corpora"), target.recorded(state)) == (
        f"{datasets} is a symbolic link"
    )


def test_a_recorded_path_outside_the_lab_directory_is_left(
    target: LocalTarget, tmp_path: Path
) -> None:
    outside = tmp_path / "data" / "otherlab" / "datasets" / "models"
    outside.mkdir(parents=True)
    made = {str(outside)}
    lab = target.names.lab_dir
    assert target.why_kept(outside, made) == f"it is outside the lab's directory {lab}"


def test_an_old_state_without_the_record_removes_no_directory(
    target: LocalTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    _up_dirs(target, {})
    old_state = {"lab": "downunit", "target": "local", "phase": "ready"}
    assert target.recorded(old_state) is None
    assert target.remove_files(NODES, target.recorded(old_state), purge_data=True) == []
    for ds in DATASETS:
        assert target.names.dataset_dir(ds).is_dir()
    for node in NODES:
        assert target.names.node_dir(node).is_dir()
    err = capsys.readouterr().err
    assert "no state records that mlseclab made it" in err


def test_make_dir_refuses_a_symlink_on_the_way(target: LocalTarget, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    target.names.lab_dir.parent.mkdir(parents=True)
    target.names.lab_dir.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TargetError, match="is a symbolic link"):
        target.make_dir({}, target.names.dataset_dir("models"))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_directory_made_by_restore_is_recorded(target: LocalTarget) -> None:
    d = target.names.dataset_dir("models")
    d.mkdir(parents=True)
    target.remember_made([target.names.lab_dir, d])  # no state: the lab is down
    assert target.recorded({}) == {str(target.names.lab_dir), str(d)}
    target.home.write_state({"lab": "downunit", "phase": "ready", MADE: []})
    vectors = target.names.dataset_dir("vectors")
    vectors.mkdir()
    target.remember_made([vectors])
    assert target.home.read_state()[MADE] == [str(vectors)]


def test_up_on_an_older_state_adopts_only_the_lab_s_own_layout(
    target: LocalTarget, tmp_path: Path
) -> None:
    """A state written before the record existed: the next ``up`` records the directories of
    the lab's layout it finds (what that older version made), never a symlink or a stray."""
    _up_dirs(target, {})
    (target.names.lab_dir / "stray").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    target.names.dataset_dir("logs").rmdir()
    target.names.dataset_dir("logs").symlink_to(outside)
    adopted = set(target.layout_dirs())
    lab = target.names.lab_dir
    assert str(lab / "nodes" / "rag-01") in adopted and str(lab / "datasets" / "models") in adopted
    assert str(lab / "stray") not in adopted
    assert str(target.names.dataset_dir("logs")) not in adopted  # a symlink: never adopted
    removed = target.remove_files(NODES, adopted, purge_data=False)
    assert removed == [] and not (lab / "nodes").exists() and outside.is_dir()
