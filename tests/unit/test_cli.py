"""The CLI's boundary: what it prints and the exit code, for every way a command can end."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from helpers.labs import SPECS, reference_text
from mlseclab import cli, ui
from mlseclab.cli import main
from mlseclab.errors import ERROR, FINDINGS, INTERRUPTED, OK, USAGE, LabError


def _spec_with_error_on_line_100(directory: Path) -> Path:
    # 99 lines of comments, then a cpu that is not a number: the error is on line 100
    text = (SPECS / "invalid" / "wrong-type.yaml").read_text(encoding="utf-8")
    body = text.splitlines()[1:]
    at = body.index("    cpu: two")
    lines = ["# padding :smile: [bold]"] * (99 - at) + body
    lines[99] = '    cpu: "two :smile: [/]"'
    path = directory / "lab.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_user_text_is_never_markup_or_emoji(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weird = tmp_path / "a[/]b [bold]c:100:"
    weird.mkdir(parents=True)  # "a[" / "]b ...": the path reads a[/]b
    path = _spec_with_error_on_line_100(weird)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"{path}:100: nodes.rag-01.cpu: expected a whole number, got 'two :smile: [/]'"
    )
    assert "Traceback" not in err and "💯" not in err and "😄" not in err

    path.write_text(reference_text(), encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: valid — lab reference")

    assert main(["validate", str(weird / "missing.yaml")]) == 1
    assert capsys.readouterr().err.startswith(f"{weird}/missing.yaml:0: no such file")


def test_ui_helpers_print_user_text_literally(capsys: pytest.CaptureFixture[str]) -> None:
    text = "x [/] [bold]y[/bold] :100: :smile:"
    ui.warn(text)
    ui.error(text)
    ui.plain(text)
    ui.info(f"[green]ok[/] {ui.esc(text)}")
    with ui.step(text):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert lines[:4] == [f"warning: {text}", f"error: {text}", text, f"ok {text}"]
    assert lines[4] == f"{text} ..."
    assert lines[5].startswith(f"✓ {text} (")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["validate", "--nope"], "mlseclab: error: unrecognized arguments: --nope"),
        ([], "mlseclab: error: the following arguments are required: COMMAND"),
        (["drift", "--layers"], "mlseclab drift: error: argument --layers: expected one argument"),
        (["plan", "--target", "aws"], "argument --target: invalid choice: 'aws'"),
    ],
)
def test_a_usage_error_exits_with_usage_not_findings(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert USAGE == 64 and USAGE != FINDINGS
    assert main(argv) == USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: mlseclab")
    assert message in captured.err


def test_help_and_version_exit_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == OK
    assert f"{USAGE} usage error" in capsys.readouterr().out
    assert main(["--version"]) == OK
    assert capsys.readouterr().out.startswith("mlseclab ")


def _dispatch_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def boom(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "_dispatch", boom)


def test_a_lab_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _dispatch_raising(monkeypatch, LabError("lab x is locked [/] by pid 7; wait for it"))
    assert main(["status"]) == ERROR
    captured = capsys.readouterr()
    assert captured.err == "error: lab x is locked [/] by pid 7; wait for it\n"
    assert captured.out == ""


def test_an_unexpected_failure_writes_a_private_crash_log_in_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "elsewhere"
    monkeypatch.setenv("MLSECLAB_STATE_DIR", str(state))
    _dispatch_raising(monkeypatch, ZeroDivisionError("division by zero"))
    assert main(["status"]) == ERROR
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: unexpected failure: ZeroDivisionError: division by zero"
    assert lines[1].startswith("error: this is a bug in mlseclab; the traceback is in ")
    log = Path(lines[1].rsplit(" ", 1)[1])
    assert log.parent == state / "logs"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "ZeroDivisionError: division by zero" in log.read_text(encoding="utf-8")
    assert "Traceback" in log.read_text(encoding="utf-8")


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _dispatch_raising(monkeypatch, KeyboardInterrupt())
    assert main(["status"]) == INTERRUPTED == 130
    assert capsys.readouterr().err == ("error: interrupted; run the same command again to resume\n")


def test_validate_finds_the_spec_like_every_other_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers.labs import REFERENCE

    monkeypatch.setenv("MLSECLAB_SPEC", str(REFERENCE))
    assert main(["validate"]) == OK
    assert capsys.readouterr().out.startswith(f"{REFERENCE}: valid")
    missing = tmp_path / "missing.yaml"
    for argv in (["validate", "-f", str(missing)], ["validate", str(missing)]):
        assert main(argv) == ERROR
        assert capsys.readouterr().err.startswith(f"{missing}:")
    assert main(["validate", "-f", str(REFERENCE), str(REFERENCE)]) == USAGE
    assert "not allowed with argument -f/--spec" in capsys.readouterr().err


def test_the_commands_do_not_import_the_cli() -> None:
    import subprocess
    import sys

    code = "import sys, mlseclab.commands; sys.exit('mlseclab.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("command", ["plan", "up", "status", "down"])
def test_target_proxmox_flag_refuses_containers_before_anything_runs(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review F17: a spec valid on the local target, with --target proxmox, is refused at
    validation (file, line, place), before any target is opened."""
    spec = SPECS / "valid" / "minimal.yaml"
    assert main([command, "-f", str(spec), "--target", "proxmox"]) == ERROR
    err = capsys.readouterr().err.strip()
    assert err == (
        f"{spec}:11: nodes.rag-01.kind: rag-01 is a container on target proxmox; containers "
        "are a local-target feature (Proxmox builds every node as a VM), use kind: vm"
    )
    assert not (tmp_path / "state" / "mini").exists()  # no state, no lock: nothing touched


def test_validate_checks_the_target_given(capsys: pytest.CaptureFixture[str]) -> None:
    spec = SPECS / "valid" / "minimal.yaml"
    assert main(["validate", str(spec)]) == OK
    capsys.readouterr()
    assert main(["validate", str(spec), "--target", "proxmox"]) == ERROR
    assert "rag-01 is a container on target proxmox" in capsys.readouterr().err
