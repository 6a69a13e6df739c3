"""make bench-ingest: 2M events from a Parquet file through the whole pipeline.

Measures, in one run: (a) end-to-end events/s from the first produce to the last row
committed in DuckDB, with JSON messages (everyone's content type) and with Arrow IPC
messages (bulk producers), (b) a raw DuckDB Arrow insert of the same rows, (c) a raw
consume of the topic with no processing; freshness p50/p99 at a steady 20k events/s; the
peak RSS of the bridge and the worker; and the CPU seconds per million events of each
stage (the producer, the bridge, the DuckDB worker, Kafka, Redis...): on a shared machine
a rate follows the load, but the stage that needs the most CPU per event is the one that
limits first. The last line of output is one JSON object.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

from bench.common import (
    RssSampler,
    bench_settings,
    latest_catch_up_s,
    now,
    running_stack,
)
from bench.ingest_latency import STEADY_RATE, count_rows, freshness, single_event_ms
from bench.stage_cpu import stage_cpu
from bridge.producer import FileProducer
from featurestore.ingest.event_decode import ARROW_CONTENT_TYPE, JSON_CONTENT_TYPE
from featurestore.logs import setup_logging
from featurestore.progress import Progress
from featurestore.settings import Settings

log = logging.getLogger("bench.ingest")

EVENTS = 2_000_000
FEATURES = 10
# Events per Kafka message: the JSON producer's, and the Arrow producer's (one write batch).
ROWS_PER_MESSAGE = {JSON_CONTENT_TYPE: 1000, ARROW_CONTENT_TYPE: 10_000}
STAGES = ("bridge", "duckdb-worker")


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


@dataclass
class EndToEnd:
    """One end-to-end run: rates, catch-up, memory and each stage's CPU."""

    events_per_s: float
    produce_events_per_s: float
    catch_up_s: float
    rss_mib: dict[str, float]
    # CPU seconds each stage spent per million events
    cpu_s_per_m: dict[str, float]


def end_to_end(settings: Settings, path: Path, content_type: str) -> EndToEnd:
    """Produce the file and wait until every row is in DuckDB; events/s, how long the
    latest-values table took to catch up after that, and peak RSS (catch-up included)."""
    before = count_rows(settings)
    producer = FileProducer(settings, ROWS_PER_MESSAGE[content_type], content_type=content_type)
    with RssSampler(settings, list(STAGES)) as rss:
        cpu_before = stage_cpu(settings)
        began = now()
        report = producer.run([path])
        produced = now() - began
        log.info("bench_produced rows=%d seconds=%.1f", report.rows_sent, produced)
        with Progress("end-to-end", EVENTS) as progress:
            committed = 0
            while committed < EVENTS:
                time.sleep(0.2)
                current = count_rows(settings) - before
                progress.update(current - committed)
                committed = current
        elapsed = now() - began
        cpu_after = stage_cpu(settings)
        catch_up = latest_catch_up_s(settings)
    per_m = {
        k: (cpu_after.get(k, 0.0) - v) * 1e6 / EVENTS
        for k, v in cpu_before.items()
        # Only the stages that matter (flower, prometheus and the like stay under 0.3).
        if cpu_after.get(k, 0.0) - v > 0.3 * EVENTS / 1e6
    }
    return EndToEnd(EVENTS / elapsed, EVENTS / produced, catch_up, rss.peak_mib, per_m)


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
        runs = {}
        for name, content_type in (("json", JSON_CONTENT_TYPE), ("arrow", ARROW_CONTENT_TYPE)):
            runs[name] = run = end_to_end(settings, data, content_type)
            log.info(
                "bench_end_to_end content=%s events_per_s=%.0f produce_events_per_s=%.0f "
                "latest_catch_up_s=%.1f cpu_s_per_million=%s",
                name,
                run.events_per_s,
                run.produce_events_per_s,
                run.catch_up_s,
                {k: round(v, 2) for k, v in run.cpu_s_per_m.items()},
            )
        fresh = freshness(settings)
        single_p50, single_p99 = single_event_ms(settings)
    shutil.rmtree(state, ignore_errors=True)
    e2e = runs["json"].events_per_s
    result: dict[str, object] = {
        "events": EVENTS,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "end_to_end_events_per_s": round(e2e),
        "end_to_end_arrow_events_per_s": round(runs["arrow"].events_per_s),
        "raw_duckdb_rows_per_s": round(raw_duckdb),
        "raw_consume_events_per_s": round(raw_consume),
        "end_to_end_vs_raw_duckdb": round(e2e / raw_duckdb, 3),
        "end_to_end_vs_raw_consume": round(e2e / raw_consume, 3),
        "latest_catch_up_after_last_commit_s": round(runs["json"].catch_up_s, 2),
        "freshness_rate_events_per_s": STEADY_RATE,
        "freshness_p50_s": round(fresh.p50_s, 3),
        "freshness_p99_s": round(fresh.p99_s, 3),
        "single_event_p50_ms": round(single_p50, 1),
        "single_event_p99_ms": round(single_p99, 1),
        "bridge_peak_rss_mib": round(runs["json"].rss_mib["bridge"], 1),
        "worker_peak_rss_mib": round(runs["json"].rss_mib["duckdb-worker"], 1),
    }
    for stage, seconds in fresh.cpu_s_per_m.items():
        result[f"freshness_cpu_s_per_m_{stage.replace('-', '_')}"] = seconds
    for name, run in runs.items():
        result[f"{name}_produce_events_per_s"] = round(run.produce_events_per_s)
        for stage, seconds in run.cpu_s_per_m.items():
            result[f"{name}_cpu_s_per_m_{stage.replace('-', '_')}"] = round(seconds, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
