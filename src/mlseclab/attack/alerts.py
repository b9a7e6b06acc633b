"""What the observability node saw: Alertmanager's alerts, polled while the attack runs.

Alertmanager listens on the observability node's mgmt address only, and no flow
lets the operator's host reach it, so the poll runs on that node (its own
Python, over the lab's SSH). Every alert seen is kept with the first time it was
seen and its ``startsAt`` (when Prometheus found the rule true), so a scenario's
detection delay is ``startsAt`` minus the scenario's start.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mlseclab.errors import LabError

ALERTMANAGER_PORT = 9093
POLL_SECONDS = 5.0


def _ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class SeenAlert:
    name: str
    labels: dict[str, str]
    starts_at: float
    first_seen: float
    last_seen: float

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        return self.name == name and all(self.labels.get(k) == v for k, v in labels.items())

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "labels": self.labels,
            "starts_at": round(self.starts_at, 3),
            "first_seen": round(self.first_seen, 3),
        }


@dataclass
class AlertWatch:
    """Polls ``/api/v2/alerts`` on the observability node until stopped."""

    ssh_config: str
    node: str
    address: str
    seen: dict[tuple[str, float, str], SeenAlert] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{ALERTMANAGER_PORT}/api/v2/alerts?active=true"

    def fetch(self) -> list[dict[str, Any]]:
        program = (
            "import urllib.request,sys;"
            f"sys.stdout.write(urllib.request.urlopen({self.url!r},timeout=10).read().decode())"
        )
        try:
            done = subprocess.run(
                ["ssh", "-F", self.ssh_config, self.node, "python3 -I -"],
                input=program,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.node}: Alertmanager did not answer in 30 s") from None
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LabError(f"{self.node}: Alertmanager at {self.url} did not answer: {tail}")
        alerts: list[dict[str, Any]] = json.loads(done.stdout or "[]")
        return alerts

    def poll(self) -> None:
        now = time.time()
        for a in self.fetch():
            labels = {k: str(v) for k, v in a.get("labels", {}).items()}
            name = labels.get("alertname", "")
            starts = _ts(a["startsAt"]) if a.get("startsAt") else now
            key = (name, round(starts, 3), json.dumps(labels, sort_keys=True))
            if key in self.seen:
                self.seen[key].last_seen = now
            else:
                self.seen[key] = SeenAlert(name, labels, starts, now, now)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except (LabError, ValueError, KeyError) as exc:
                if str(exc) not in self.errors:
                    self.errors.append(str(exc))
            self._stop.wait(POLL_SECONDS)

    def start(self) -> None:
        self.poll()  # fails loudly when Alertmanager is not there at all
        self._thread = threading.Thread(target=self._loop, name="alert-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=40)

    def active_before(self, since: float) -> list[SeenAlert]:
        return [a for a in self.seen.values() if a.starts_at < since]

    def find(self, name: str, labels: dict[str, str]) -> list[SeenAlert]:
        return sorted(
            (a for a in self.seen.values() if a.matches(name, labels)),
            key=lambda a: a.starts_at,
        )
