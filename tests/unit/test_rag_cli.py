"""`mlseclab rag`: the operator's refusals, before anything reaches a node or the gateway."""

from __future__ import annotations

import pytest

from helpers.labs import REFERENCE
from mlseclab.cli import main
from mlseclab.errors import ERROR, USAGE


def test_query_as_an_undeclared_client_names_the_declared_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rag", "query", "--as", "intruder", "hello", "-f", str(REFERENCE)]) == ERROR
    err = capsys.readouterr().err
    assert "unknown client 'intruder'; the spec's clients: operator, rag-app" in err
    assert "Traceback" not in err


def test_query_needs_a_client(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rag", "query", "hello", "-f", str(REFERENCE)]) == USAGE
    assert "--as" in capsys.readouterr().err


def test_ingest_and_status_on_a_lab_that_is_not_up(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("ingest", "status"):
        assert main(["rag", command, "-f", str(REFERENCE)]) == ERROR
        assert "is not up: run `mlseclab up` first" in capsys.readouterr().err
