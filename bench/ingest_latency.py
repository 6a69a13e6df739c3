"""make bench-ingest's latency half, also on its own (python -m bench.ingest_latency, a stack
of its own): freshness at a steady 20k events/s, and one event produced alone until it is
servable. The last line of output is one JSON object."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis
from confluent_kafka import Producer

from bench.common import bench_settings, now, percentile, running_stack
from bench.stage_cpu import stage_cpu
from bridge.producer import producer_config
from featurestore.logs import setup_logging
from featurestore.progress import Progress
from featurestore.settings import Settings
from featurestore.store.online import OnlineStore
from tasks.app import configure
from tasks.client.query import query_table

STEADY_RATE = 20_000
STEADY_SECONDS = 15
SINGLE_EVENT_TRIES = 40


def count_rows(settings: Settings, where: str = "true") -> int:
    """Rows in the features table, asked of the DuckDB service."""
    app = configure(settings)
    table = query_table(app, f"SELECT count(*) AS n FROM features WHERE {where}", timeout=60)
    return int(table.column("n")[0].as_py())


@dataclass
class Freshness:
    """Commit minus send time at a steady rate, and the CPU each stage spent on it."""

    p50_s: float
    p99_s: float
    cpu_s_per_m: dict[str, float]


def steady_message(prefix: str, first: int, count: int) -> bytes:
    """One message of `count` events of feature f, entities prefix_first and on, stamped now."""
    stamp = dt.datetime.now(dt.UTC).isoformat()
    rows = [
        {
            "entity_id": f"{prefix}_{first + i}",
            "feature_name": "f",
            "value": 1.0,
            "event_timestamp": stamp,
        }
        for i in range(count)
    ]
    return orjson.dumps(rows)


def freshness(settings: Settings) -> Freshness:
    """Produce at a steady rate with event_timestamp = send time; commit minus send."""
    cpu_before = stage_cpu(settings)
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    per_message = 200
    interval = per_message / STEADY_RATE
    total = STEADY_RATE * STEADY_SECONDS
    began = now()
    sent = 0
    with Progress("freshness", total) as progress:
        while sent < total:
            producer.produce(settings.features_topic, steady_message("fresh", sent, per_message))
            producer.poll(0)
            sent += per_message
            progress.update(per_message)
            time.sleep(max(0.0, began + sent / STEADY_RATE - now() - interval / 2))
    producer.flush(30)
    while count_rows(settings, "entity_id LIKE 'fresh\\_%' ESCAPE '\\'") < total:
        time.sleep(0.5)
    app = configure(settings)
    table = query_table(
        app,
        "SELECT quantile_cont(lag, 0.5) AS p50, quantile_cont(lag, 0.99) AS p99 FROM "
        "(SELECT epoch(created_at) - epoch(event_timestamp) AS lag FROM features "
        "WHERE entity_id LIKE 'fresh\\_%' ESCAPE '\\')",
        timeout=60,
    )
    cpu_after = stage_cpu(settings)
    # Small batches cost more per event (a task, a transaction, a script call each): this
    # shows what the batching rule costs at this rate.
    per_m: dict[str, float] = {
        stage: round((cpu_after.get(stage, 0.0) - cpu_before[stage]) * 1e6 / total, 2)
        for stage in ("bridge", "duckdb-worker", "redis-server")
        if stage in cpu_before
    }
    return Freshness(
        float(table.column("p50")[0].as_py()), float(table.column("p99")[0].as_py()), per_m
    )


def single_event_ms(settings: Settings) -> tuple[float, float]:
    """p50 and p99 (ms) from producing one event alone (as PushFeatures does: no linger,
    waiting for the broker's ack) until the online store, which GetOnlineFeatures reads,
    has it; the pipeline is left idle between tries."""
    producer = Producer(producer_config(settings, linger_ms=0))
    online = OnlineStore(redis.Redis.from_url(settings.redis_url))
    run = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    # Try -1 is not timed: a new producer's first message waits for its connection and its
    # idempotent producer id (about 300 ms, the p99 of every run before), which the
    # long-lived producer of PushFeatures pays once.
    for i in range(-1, SINGLE_EVENT_TRIES):
        entity = f"single_{run}_{i}"
        event = {
            "entity_id": entity,
            "feature_name": "f",
            "value": float(i),
            "event_timestamp": dt.datetime.now(dt.UTC).isoformat(),
        }
        began = now()
        producer.produce(settings.features_topic, orjson.dumps(event))
        producer.flush(30)
        while not online.get(entity):
            if now() - began > 60:
                raise TimeoutError(f"event {i} was not servable within 60 s")
            time.sleep(0.001)
        if i >= 0:
            latencies.append((now() - began) * 1000)
        time.sleep(0.3)
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def main() -> None:
    """Freshness and single-event latency on a stack of their own; JSON last."""
    setup_logging("WARNING")
    state = Path(tempfile.mkdtemp(prefix="fstore-bench-latency-"))
    settings = bench_settings(state)
    with running_stack(settings):
        fresh = freshness(settings)
        single_p50, single_p99 = single_event_ms(settings)
    shutil.rmtree(state, ignore_errors=True)
    result: dict[str, object] = {
        "load_average_1m": round(os.getloadavg()[0], 1),
        "freshness_rate_events_per_s": STEADY_RATE,
        "freshness_p50_s": round(fresh.p50_s, 3),
        "freshness_p99_s": round(fresh.p99_s, 3),
        "single_event_p50_ms": round(single_p50, 1),
        "single_event_p99_ms": round(single_p99, 1),
    }
    for stage, seconds in fresh.cpu_s_per_m.items():
        result[f"freshness_cpu_s_per_m_{stage.replace('-', '_')}"] = seconds
    print(json.dumps(result))


if __name__ == "__main__":
    main()
