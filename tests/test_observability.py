"""Prometheus scrapes every program, and every Grafana panel's query runs against it."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from featurestore.services import PrometheusService
from featurestore.settings import Settings
from tasks.app import configure
from tests.helpers import wait_for_count

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"
# Panels whose series exist as soon as the stack has ingested something.
MUST_HAVE_DATA = {
    "fstore_up",
    "up",
    "sum by (outcome) (rate(fstore_bridge_messages_total[1m]))",
    "sum by (outcome) (rate(fstore_write_rows_total[1m]))",
    "fstore_bridge_batches_in_flight",
    "rate(fstore_bridge_rows_total[1m])",
}


def prom_query(settings: Settings, expr: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"query": expr})
    url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1/query?{query}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        result: dict[str, Any] = json.loads(reply.read())
    return result


def panel_queries() -> list[str]:
    exprs: list[str] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs.extend(target["expr"] for target in panel["targets"])
    return exprs


def wait_for(settings: Settings, expr: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        reply = prom_query(settings, expr)
        if reply["data"]["result"] or time.monotonic() > deadline:
            return reply
        time.sleep(1)


def test_prometheus_scrapes_every_program(stack: Settings) -> None:
    jobs = set(PrometheusService(stack).scrape_targets())
    deadline = time.monotonic() + 60
    up: dict[str, str] = {}
    while time.monotonic() < deadline:
        reply = prom_query(stack, "up")
        up = {r["metric"]["job"]: r["value"][1] for r in reply["data"]["result"]}
        if set(up) == jobs and set(up.values()) == {"1"}:
            break
        time.sleep(1)
    assert up == dict.fromkeys(jobs, "1")


def test_every_dashboard_panel_query_runs(stack: Settings) -> None:
    tag = f"o{uuid.uuid4().hex[:8]}_"
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for i in range(3):
        producer.produce(
            stack.features_topic,
            orjson.dumps(
                {
                    "entity_id": f"{tag}{i}",
                    "feature_name": "f",
                    "value": i,
                    "event_timestamp": "2024-01-01T00:00:00Z",
                }
            ),
        )
    producer.produce(stack.features_topic, b"not json")
    producer.flush(30)
    assert wait_for_count(configure(stack), tag, 3) == 3
    exprs = panel_queries()
    assert len(exprs) >= 10
    assert set(exprs) >= MUST_HAVE_DATA
    for expr in exprs:
        reply = wait_for(stack, expr) if expr in MUST_HAVE_DATA else prom_query(stack, expr)
        assert reply["status"] == "success", expr
        if expr in MUST_HAVE_DATA:
            assert reply["data"]["result"], f"no data for panel query {expr}"
