"""`fstore status --watch`: the stack's flow on one terminal screen, read from Prometheus and
refreshed: events/s, consumer lag, freshness, write and read rates, models and their last
sync, Predict rate and p99, programs down and alerts firing."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, TextIO

from featurestore.errors import ServiceError
from featurestore.settings import Settings

CLEAR = "\x1b[H\x1b[2J"
PREDICT = 'method="Predict"'
# One query per figure; each is also a dashboard panel's (grafana/dashboards).
QUERIES = {
    "events": "sum(rate(fstore_bridge_rows_total[1m]))",
    "messages": "sum(rate(fstore_bridge_messages_total[1m]))",
    "freshness_p99": "histogram_quantile(0.99, sum by (le) "
    "(rate(fstore_freshness_kafka_to_online_seconds_bucket[5m])))",
    "writes": "sum(rate(fstore_write_rows_total[1m]))",
    "reads": "sum(rate(fstore_reads_total[1m]))",
    "predict": f"sum(rate(fstore_grpc_request_seconds_count{{{PREDICT}}}[1m]))",
    "predict_p99": "histogram_quantile(0.99, sum by (le) "
    f"(rate(fstore_grpc_request_seconds_bucket{{{PREDICT}}}[5m])))",
}
LAG = "sum by (topic) (fstore_kafka_consumer_lag_messages)"
SERVED = "max by (model, version) (fstore_model_served_version)"
SYNC_AGE = "time() - max by (model) (fstore_model_sync_last_success_timestamp_seconds)"
DOWN = "up == 0"


@dataclass(frozen=True, order=True)
class Model:
    """A served model: its version and seconds since its last successful sync."""

    name: str
    version: str
    sync_age_s: float


@dataclass(frozen=True, order=True)
class Alert:
    """An alert firing in Prometheus."""

    name: str
    severity: str
    summary: str


@dataclass(frozen=True)
class Snapshot:
    """Every figure of one screen; NaN where Prometheus has no value (yet)."""

    figures: dict[str, float]
    lag: dict[str, float] = field(default_factory=dict)
    models: list[Model] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


class Prometheus:
    """The few calls of Prometheus's HTTP API this view makes."""

    def __init__(self, settings: Settings) -> None:
        self.url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1"

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - loopback http
                body = json.loads(reply.read())
        except (OSError, ValueError, urllib.error.URLError) as exc:
            raise ServiceError(f"Prometheus at {self.url} does not answer ({exc})") from exc
        if body.get("status") != "success":
            raise ServiceError(f"Prometheus refused {path}: {body.get('error', 'no reason')}")
        return body["data"]

    def vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """Labels and value of each series of an instant query."""
        return [
            (r["metric"], float(r["value"][1])) for r in self._get("query", query=expr)["result"]
        ]

    def scalar(self, expr: str) -> float:
        """The value of a query giving one series; NaN when it gives none."""
        values = self.vector(expr)
        return values[0][1] if values else math.nan

    def snapshot(self) -> Snapshot:
        """Every figure of the screen, read now."""
        ages = {labels["model"]: age for labels, age in self.vector(SYNC_AGE)}
        models = sorted(
            Model(labels["model"], labels["version"], ages.get(labels["model"], math.nan))
            for labels, _ in self.vector(SERVED)
        )
        alerts = sorted(
            Alert(
                a["labels"]["alertname"],
                a["labels"].get("severity", "-"),
                a.get("annotations", {}).get("summary", ""),
            )
            for a in self._get("alerts")["alerts"]
            if a["state"] == "firing"
        )
        return Snapshot(
            figures={name: self.scalar(expr) for name, expr in QUERIES.items()},
            lag={labels["topic"]: value for labels, value in self.vector(LAG)},
            models=models,
            down=sorted(labels.get("job", "?") for labels, _ in self.vector(DOWN)),
            alerts=alerts,
        )


def number(value: float, unit: str = "", digits: int = 1) -> str:
    """A figure for the screen: '-' when there is none."""
    if math.isnan(value):
        return "-"
    return f"{value:.{digits}f}{unit}"


def duration(seconds: float) -> str:
    """Seconds as 45s, 12m, 3h, 2d; '-' when unknown."""
    if math.isnan(seconds):
        return "-"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def render(snap: Snapshot, width: int = 100) -> str:
    """One screen of text for the snapshot."""
    f = snap.figures
    lag = ", ".join(f"{topic} {value:.0f}" for topic, value in sorted(snap.lag.items())) or "-"
    lines = [
        f"INGEST   events/s {number(f['events'])}   messages/s {number(f['messages'])}   lag {lag}",
        f"         freshness p99 (Kafka -> online) {number(f['freshness_p99'], ' s', 2)}",
        f"DUCKDB   rows written/s {number(f['writes'])}   reads/s {number(f['reads'])}",
        f"SERVING  Predict/s {number(f['predict'])}   "
        f"Predict p99 {number(f['predict_p99'] * 1000, ' ms', 2)}",
        "",
        f"{'MODEL':<32}{'VERSION':<14}LAST SYNC",
    ]
    lines += [f"{m.name:<32}{m.version:<14}{duration(m.sync_age_s)} ago" for m in snap.models]
    if not snap.models:
        lines.append("(no model served)")
    lines += [
        "",
        f"DOWN     {', '.join(snap.down) or '-'}",
        "",
        f"ALERTS FIRING ({len(snap.alerts)})",
    ]
    lines += [f"  {a.name} [{a.severity}] {a.summary}" for a in snap.alerts]
    return "\n".join(line[:width] for line in lines)


def run(settings: Settings, interval_s: float, count: int, out: TextIO = sys.stdout) -> int:
    """Refresh the screen every interval_s, count times (0: until interrupted); 1 when
    Prometheus never answered."""
    prometheus = Prometheus(settings)
    clear = CLEAR if out.isatty() else ""
    answered = False
    shown = 0
    try:
        while count == 0 or shown < count:
            stamp = time.strftime("%H:%M:%S")
            try:
                # Cut to the screen's width on a terminal; whole lines into a pipe or file.
                width = shutil.get_terminal_size().columns if clear else 1000
                body = render(prometheus.snapshot(), width)
                answered = True
            except ServiceError as exc:
                body = str(exc)
            out.write(
                f"{clear}fstore status --watch  {stamp}  (every {interval_s:g}s, Ctrl-C ends)\n\n"
            )
            out.write(body + "\n")
            out.flush()
            shown += 1
            if count == 0 or shown < count:
                time.sleep(interval_s)
    except KeyboardInterrupt:
        pass
    return 0 if answered else 1
