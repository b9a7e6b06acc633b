"""The loader's bounds: what cannot be a fixture file (FIFOs, devices, sizes, speed).

Each case asserts the exact message, that no traceback reaches the user and
that the answer comes back within a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.bigspec import big_spec_text
from helpers.labs import ROOT, load_text, reference_text
from mlseclab.cli import main
from mlseclab.errors import SpecError
from mlseclab.spec import MAX_SPEC_BYTES, load_spec
from mlseclab.yamlsource import MAX_DEPTH, MAX_VALUES

FILE_FIX = "pass a lab spec file such as inventories/reference/lab.yaml"


def validate_in_subprocess(path: Path) -> subprocess.CompletedProcess[str]:
    """`mlseclab validate PATH` in its own interpreter: a regression hangs it, not the suite."""
    code = "import sys; from mlseclab.cli import main; sys.exit(main(['validate', sys.argv[1]]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def refused(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    start = time.monotonic()
    assert main(["validate", str(path)]) == 1
    assert time.monotonic() - start < 5
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    return captured.err.strip()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "lab.yaml"
    os.mkfifo(fifo)
    proc = validate_in_subprocess(fifo)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"{fifo}:0: is not a regular file (it is a FIFO); {FILE_FIX}"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_is_refused_not_read_forever(capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(Path("/dev/zero"), capsys) == (
        f"/dev/zero:0: is not a regular file (it is a character device); {FILE_FIX}"
    )


def test_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(tmp_path, capsys) == (
        f"{tmp_path}:0: cannot read the spec: IsADirectoryError; pass a readable UTF-8 YAML file"
    )


def test_non_utf8_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lab.yaml"
    path.write_bytes(b"lab: {name: caf\xe9}\n")
    assert refused(path, capsys) == (
        f"{path}:0: cannot read the spec: UnicodeDecodeError; pass a readable UTF-8 YAML file"
    )


def test_a_file_over_the_cap_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(reference_text() + "#" * MAX_SPEC_BYTES, encoding="utf-8")
    assert refused(path, capsys) == (
        f"{path}:0: the spec is larger than 1024 KiB; a lab spec is a few KB "
        "(200 nodes fit in about 55 KB): pass the lab's spec, not another file"
    )


def test_a_file_at_the_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    text = reference_text()
    path.write_text(text + "#" * (MAX_SPEC_BYTES - len(text.encode()) - 1) + "\n")
    assert path.stat().st_size == MAX_SPEC_BYTES
    assert load_spec(path).lab.name == "reference"


@pytest.mark.parametrize(("char", "code"), [("\x7f", "007F"), ("\x00", "0000"), ("\x1b", "001B")])
def test_control_characters_are_located(char: str, code: str) -> None:
    text = reference_text().replace("cpu: 8", f"cpu: 8{char}")
    line = text[: text.index(char)].count("\n") + 1
    with pytest.raises(SpecError) as exc:
        load_text(text)
    assert [str(p) for p in exc.value.problems] == [
        f"lab.yaml:{line}: YAML syntax error: the control character U+{code} is not allowed "
        f"in YAML; delete it (inside a double-quoted string, write it as the escape "
        f"\\x{code[2:].lower()})"
    ]


def test_modest_anchors_and_aliases_still_load() -> None:
    text = reference_text().replace(
        "      - {dataset: models, path: /srv/models, mode: ro}",
        "      - &models {dataset: models, path: /srv/models, mode: ro}",
    )
    text = text.replace(
        "    gpu: {mapping: gpu-inference}", "    gpu: &gpu {mapping: gpu-inference}"
    )
    text = text.replace("    vm_id: 6613\n", "    vm_id: 6613\n    gpu: *gpu\n")
    spec = load_text(text)
    assert spec.nodes["vectordb-01"].gpu == spec.nodes["inference-01"].gpu


@pytest.mark.parametrize("deeper", [0, 1])
def test_nesting_is_refused_just_past_the_limit(deeper: int) -> None:
    # tags of a node sit at depth 3 (the document, nodes, the node): lists add the rest
    lists = MAX_DEPTH - 3 + deeper
    nested = "[" * lists + "]" * lists
    text = reference_text().replace("    kind: vm\n    cpu: 8", f"    tags: {nested}\n    cpu: 8")
    with pytest.raises(SpecError) as exc:
        load_text(text)
    deep = [p.message for p in exc.value.problems if "nests deeper" in p.message]
    assert deep == (
        [
            f"the YAML nests deeper than {MAX_DEPTH} levels; a lab spec needs a few "
            "(see inventories/reference/lab.yaml)"
        ]
        if deeper
        else []
    )


def test_a_wide_bomb_is_refused_quickly() -> None:
    """Twenty aliases of a 10-item anchor per level, nine levels: 20^9 values if expanded."""
    lines = ["l0: &l0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 20) + "]" for i in range(1, 10)]
    start = time.monotonic()
    with pytest.raises(SpecError) as exc:
        load_text("\n".join(lines) + "\n")
    assert time.monotonic() - start < 2
    assert [str(p) for p in exc.value.problems] == [
        f"lab.yaml:5: the YAML expands to more than {MAX_VALUES} values, aliases counted as "
        "copies (an alias bomb?); write the values out instead of nesting aliases"
    ]


def test_a_huge_number_is_located() -> None:
    text = reference_text().replace("cpu: 8", "cpu: " + "9" * 5000)
    with pytest.raises(SpecError) as exc:
        load_text(text)
    [problem] = exc.value.problems
    assert problem.line == text[: text.index("9" * 5000)].count("\n") + 1
    assert problem.message.startswith("cannot read the value '9999")
    assert problem.message.endswith("; correct it, or quote it to make it a string")
    assert "set_int_max_str_digits" not in problem.message


def test_a_big_spec_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(big_spec_text(200), encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert ": valid — lab big: 6 networks, 200 nodes, 4 datasets, 8 flows (" in (
        capsys.readouterr().out
    )
