"""How harden reads ansible-runner events: statuses, diffs, and secrets kept out."""

from __future__ import annotations

from pathlib import Path

from mlseclab.harden import _result_of


def event(kind: str, **res: object) -> dict[str, object]:
    return {"event": kind, "event_data": {"host": "rag-01", "task": "Write a file", "res": res}}


def test_changed_and_ok_are_told_apart() -> None:
    assert _result_of(event("runner_on_ok", changed=False)).status == "ok"  # type: ignore[union-attr]
    changed = _result_of(
        event("runner_on_ok", changed=True, diff={"before": "a\n", "after": "b\n"})
    )
    assert changed is not None and changed.status == "changed"
    assert changed.diff == [{"before": "a\n", "after": "b\n"}]


def test_failures_carry_their_message_but_never_a_secret() -> None:
    failed = _result_of(event("runner_on_failed", msg="sshd -T rejected the file"))
    assert failed is not None and failed.status == "failed"
    assert failed.message == "sshd -T rejected the file"
    hidden = _result_of(
        event(
            "runner_on_failed",
            msg="password=hunter2",
            _ansible_no_log=True,
            diff={"after": "hunter2"},
        )
    )
    assert hidden is not None
    assert "hunter2" not in hidden.message and hidden.diff == []


def test_other_events_are_ignored() -> None:
    assert _result_of({"event": "playbook_on_task_start", "event_data": {}}) is None


def test_mitogen_is_the_default_transport_and_has_a_switch() -> None:
    from mlseclab.harden import transport_env

    on = transport_env({})
    assert on["ANSIBLE_STRATEGY"] == "mitogen_linear"
    plugins = Path(on["ANSIBLE_STRATEGY_PLUGINS"])
    assert (plugins / "mitogen_linear.py").is_file()
    for off in ("0", "no", "false", "OFF"):
        assert transport_env({"MLSECLAB_MITOGEN": off}) == {}
