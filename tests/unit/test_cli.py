"""The CLI's boundary: what it prints and the exit code, for every way a command can end."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.labs import SPECS, reference_text
from mlseclab import ui
from mlseclab.cli import main


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
