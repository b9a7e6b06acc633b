"""Tampers for detection (MLSL-OBS-07, MLSL-OBS-08): the alerting path and the signals."""

from __future__ import annotations

from posture.tampers import Tamper
from posture.tampers_b import _backup, _restore

ALERT_RULES = "/etc/prometheus/mlseclab-alerts.yml"
PROMETHEUS_RELOAD = "systemctl reload prometheus.service && sleep 3"

TAMPERS: list[Tamper] = [
    Tamper(
        name="alertmanager-stopped",
        node="obs-01",
        breaks=("test_detection_rules_evaluated_and_routed",),
        apply="systemctl stop prometheus-alertmanager.service",
        revert="systemctl start prometheus-alertmanager.service && sleep 2",
    ),
    Tamper(
        name="detection-rule-removed",
        node="obs-01",
        breaks=("test_detection_rules_evaluated_and_routed",),
        apply=(
            f"{_backup('detection-rule-removed', ALERT_RULES)} && "
            f"sed -i 's/alert: MlseclabJournalSilent/alert: RenamedAway/' {ALERT_RULES} && "
            f"{PROMETHEUS_RELOAD}"
        ),
        revert=f"{_restore('detection-rule-removed', ALERT_RULES)} && {PROMETHEUS_RELOAD}",
    ),
    Tamper(
        name="signals-stopped",
        node="rag-01",
        breaks=("test_security_signals_collected",),
        # stopped for longer than the textfile may be old, then checked
        apply="systemctl stop mlseclab-signals.service",
        revert="systemctl start mlseclab-signals.service && sleep 2",
    ),
]
