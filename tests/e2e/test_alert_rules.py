"""The lab's detection rules under `promtool test rules`, with the node image's promtool.

tests/rules/mlseclab-alerts.test.yml holds, for each alert, the counters its attack
moves (it must fire) and ten minutes of a clean lab's traffic, the posture suite's own
probes included (nothing may fire). A rule that cannot fire would pass the quiet
half, so each alert is also broken on purpose, in a copy of the rules, and the
attack half must then fail naming it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlseclab.targets.local.image import ImageCache
from mlseclab.targets.local.names import LocalNames

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "roles" / "observability" / "files" / "mlseclab-alerts.yml"
TESTS = ROOT / "tests" / "rules" / "mlseclab-alerts.test.yml"


@pytest.fixture(scope="module")
def promtool() -> Path:
    """promtool from the node image (built once and cached, as `up` does): the
    operator's host does not need Prometheus installed."""
    rootfs, _ = ImageCache(LocalNames("rules", Path("/")).image_root).ensure()
    tool = rootfs / "usr" / "bin" / "promtool"
    assert tool.is_file(), f"the node image has no promtool at {tool}"
    return tool


def _alerts() -> list[str]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _run(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid(promtool: Path) -> None:
    done = _run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_on_its_attack_and_never_on_a_clean_lab(promtool: Path) -> None:
    done = _run(promtool, "test", "rules", str(TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", TESTS.read_text(encoding="utf-8")))
    assert set(_alerts()) <= tested, f"alerts without a test: {set(_alerts()) - tested}"


@pytest.mark.parametrize("alert", _alerts())
def test_a_rule_that_cannot_fire_fails_its_test(promtool: Path, alert: str, tmp_path: Path) -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(0) > 1"
    broken_dir = tmp_path / "roles" / "observability" / "files"
    broken_dir.mkdir(parents=True)
    (broken_dir / RULES.name).write_text(yaml.safe_dump(doc), encoding="utf-8")
    tests_dir = tmp_path / "tests" / "rules"
    tests_dir.mkdir(parents=True)
    shutil.copy(TESTS, tests_dir / TESTS.name)
    done = _run(promtool, "test", "rules", str(tests_dir / TESTS.name))
    assert done.returncode != 0, f"{alert}: the rules test passed with the alert unable to fire"
    assert f"alertname: {alert}" in done.stdout + done.stderr, done.stdout[-2000:]
