"""make bench-ingest: 2M events from a Parquet file through the whole pipeline.

Measures, in one run: (a) end-to-end events/s from the first produce to the last row
committed in DuckDB, (b) a raw DuckDB Arrow insert of the same rows, (c) a raw consume of
the topic with no processing; freshness p50/p99 at a steady 20k events/s; and the peak
RSS of the bridge and the worker. The last line of output is one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import RssSampler, bench_settings, latest_catch_up_s, now, running_stack
from bridge.producer import FileProducer
from featurestore.logs import setup_logging
from featurestore.progress import Progress
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import query_table

log = logging.getLogger("bench.ingest")

EVENTS = 2_000_000
FEATURES = 10
STEADY_RATE = 20_000
STEADY_SECONDS = 15


def make_events(path: Path, events: int) -> None:
    """A Parquet file of events: entities with FEATURES features each."""
    duckdb.sql(
        f"""COPY (SELECT 'cust_' || (i // {FEATURES}) AS entity_id,
                         'feature_' || (i % {FEATURES}) AS feature_name,
                         random() * 100 AS value,
                         TIMESTAMP '2024-01-01' + to_microseconds(i // {FEATURES})
                           AS event_timestamp
                  FROM range({events}) t(i)) TO '{path}' (FORMAT parquet)"""
    )


def raw_duckdb_rows_per_s(path: Path) -> float:
    """A raw Arrow insert of the same rows in 10k-row batches, into a fresh file."""
    table = pq.read_table(path)
    folder = Path(tempfile.mkdtemp())
    con = duckdb.connect(str(folder / "raw.duckdb"))
    con.execute(
        "CREATE TABLE features (entity_id TEXT, feature_name TEXT, value DOUBLE, "
        "event_timestamp TIMESTAMP, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    )
    began = now()
    for batch in table.to_batches(10_000):
        con.execute("BEGIN")
        con.register("incoming", batch)
        con.execute(
            "INSERT INTO features (entity_id, feature_name, value, event_timestamp) "
            "SELECT * FROM incoming"
        )
        con.execute("COMMIT")
    elapsed = now() - began
    con.close()
    shutil.rmtree(folder)
    return float(table.num_rows / elapsed)


def raw_consume_events_per_s(settings: Settings, path: Path) -> float:
    """Produce the file to a scratch topic, then time a plain consume of all of it."""
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(settings.kafka_client_config())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    report = FileProducer(settings.model_copy(update={"features_topic": topic}), 1000).run([path])
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": topic,
            "enable.auto.commit": False,
        }
    )
    # Assigned, not subscribed: no group join in the timing; the clock starts before the
    # first fetch is asked for.
    began = now()
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages = 0
    while messages < report.messages:
        for msg in consumer.consume(500, timeout=1.0):
            if msg.error() is None:
                messages += 1
    elapsed = now() - began
    consumer.close()
    admin.delete_topics([topic])
    return report.rows_sent / elapsed


def count_rows(settings: Settings, where: str = "true") -> int:
    """Rows in the features table, asked of the DuckDB service."""
    app = configure(settings)
    table = query_table(app, f"SELECT count(*) AS n FROM features WHERE {where}", timeout=60)
    return int(table.column("n")[0].as_py())


def end_to_end(settings: Settings, path: Path) -> tuple[float, float, dict[str, float]]:
    """Produce the file and wait until every row is in DuckDB; events/s, how long the
    latest-values table took to catch up after that, and peak RSS (catch-up included)."""
    with RssSampler(settings, ["bridge", "duckdb-worker"]) as rss:
        began = now()
        report = FileProducer(settings, 1000).run([path])
        log.info("bench_produced rows=%d seconds=%.1f", report.rows_sent, now() - began)
        with Progress("end-to-end", EVENTS) as progress:
            committed = 0
            while committed < EVENTS:
                time.sleep(0.2)
                current = count_rows(settings)
                progress.update(current - committed)
                committed = current
        elapsed = now() - began
        catch_up = latest_catch_up_s(settings)
    return EVENTS / elapsed, catch_up, rss.peak_mib


def freshness(settings: Settings) -> tuple[float, float]:
    """Produce at a steady rate with event_timestamp = send time; commit minus send."""
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    per_message = 200
    interval = per_message / STEADY_RATE
    total = STEADY_RATE * STEADY_SECONDS
    began = now()
    sent = 0
    with Progress("freshness", total) as progress:
        while sent < total:
            stamp = dt.datetime.now(dt.UTC).isoformat()
            rows = [
                {
                    "entity_id": f"fresh_{sent + i}",
                    "feature_name": "f",
                    "value": 1.0,
                    "event_timestamp": stamp,
                }
                for i in range(per_message)
            ]
            producer.produce(settings.features_topic, orjson.dumps(rows))
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
    return float(table.column("p50")[0].as_py()), float(table.column("p99")[0].as_py())


def main() -> None:
    """Run every measurement and print the JSON summary last."""
    setup_logging("WARNING")
    logging.getLogger("bench").setLevel(logging.INFO)
    logging.getLogger("featurestore.progress").setLevel(logging.INFO)
    state = Path(tempfile.mkdtemp(prefix="fstore-bench-"))
    settings = bench_settings(state)
    data = state / "events.parquet"
    make_events(data, EVENTS)
    raw_duckdb = raw_duckdb_rows_per_s(data)
    log.info("bench_raw_duckdb rows_per_s=%.0f", raw_duckdb)
    with running_stack(settings):
        raw_consume = raw_consume_events_per_s(settings, data)
        log.info("bench_raw_consume events_per_s=%.0f", raw_consume)
        e2e, catch_up, rss = end_to_end(settings, data)
        log.info("bench_end_to_end events_per_s=%.0f latest_catch_up_s=%.1f", e2e, catch_up)
        p50, p99 = freshness(settings)
    shutil.rmtree(state, ignore_errors=True)
    result = {
        "events": EVENTS,
        "end_to_end_events_per_s": round(e2e),
        "raw_duckdb_rows_per_s": round(raw_duckdb),
        "raw_consume_events_per_s": round(raw_consume),
        "end_to_end_vs_raw_duckdb": round(e2e / raw_duckdb, 3),
        "end_to_end_vs_raw_consume": round(e2e / raw_consume, 3),
        "latest_catch_up_after_last_commit_s": round(catch_up, 2),
        "freshness_rate_events_per_s": STEADY_RATE,
        "freshness_p50_s": round(p50, 3),
        "freshness_p99_s": round(p99, 3),
        "bridge_peak_rss_mib": round(rss["bridge"], 1),
        "worker_peak_rss_mib": round(rss["duckdb-worker"], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
