"""Helpers shared by the integration tests: test data, counting through the DuckDB service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from celery import Celery
from confluent_kafka import Consumer, TopicPartition

from featurestore.settings import Settings
from featurestore.store.online import OnlineStore, OnlineValue
from tasks.client.query import query_table

CHECKSUM_SQL = (
    "SELECT count(*) AS n, coalesce(sum(hash(entity_id, feature_name, value, "
    "event_timestamp)), 0)::VARCHAR AS checksum FROM {source} WHERE starts_with(entity_id, ?)"
)


def write_events(path: Path, prefix: str, entities: int, features: int = 10, seed: int = 1) -> int:
    """A Parquet or CSV file of events with unique (entity, feature, timestamp); row count."""
    fmt = "parquet" if path.suffix == ".parquet" else "csv"
    with duckdb.connect() as con:
        con.execute(
            f"""COPY (SELECT '{prefix}' || (i // {features}) AS entity_id,
                         'feature_' || (i % {features}) AS feature_name,
                         round(((hash(i + {seed}) % 1000000) / 1000.0)::DOUBLE, 3) AS value,
                         TIMESTAMP '2024-01-01' + to_seconds(i // {features})
                           + to_microseconds(i % 997) AS event_timestamp
                  FROM range({entities * features}) t(i)) TO '{path}' (FORMAT {fmt})"""
        )
    return entities * features


def expected_checksum(path: Path, prefix: str) -> tuple[int, str]:
    """Count and checksum of a file's events, computed the way the DuckDB service does."""
    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
    source = f"(SELECT * FROM {reader}('{path}'))"
    with duckdb.connect() as con:
        row = con.execute(CHECKSUM_SQL.format(source=source), [prefix]).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def stored_checksum(app: Celery, prefix: str, timeout: float = 60) -> tuple[int, str]:
    """Count and checksum of the events with this entity prefix in the DuckDB service."""
    table = query_table(app, CHECKSUM_SQL.format(source="features"), [prefix], timeout=timeout)
    return int(table.column("n")[0].as_py()), str(table.column("checksum")[0].as_py())


def stored_count(app: Celery, prefix: str) -> int:
    """Events with this entity prefix in DuckDB (0 while the service does not answer)."""
    try:
        # Short: a read prefetched by a worker that is then killed is never answered.
        return stored_checksum(app, prefix, timeout=10)[0]
    except Exception:  # noqa: BLE001 - during fault tests the service may be down
        return 0


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `fstore ARGS` with these settings, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "featurestore.cli", *args],
        env={**os.environ, **settings.to_env(), "FSTORE_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> bool:
    """Poll condition until it holds or the timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def wait_for_online(
    online: OnlineStore, entities: list[str], features: int, timeout: float = 60
) -> dict[str, dict[str, OnlineValue]]:
    """Wait until every entity has `features` values online (the online store is updated
    just after the DuckDB commit, so a count in DuckDB can run ahead of it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {e: online.get(e) for e in entities}
        if all(len(v) >= features for v in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def wait_for_count(app: Celery, prefix: str, expected: int, timeout: float = 180) -> int:
    """Wait until DuckDB holds at least `expected` events with the prefix; the count."""
    deadline = time.monotonic() + timeout
    count = stored_count(app, prefix)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        count = stored_count(app, prefix)
    return count


def bridge_caught_up(settings: Settings, topic: str | None = None) -> bool:
    """Whether the bridge's group has committed every message of the topic (features by
    default): each batch it sent is written, none is left to resend."""
    topic = topic or settings.features_topic
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
        }
    )
    try:
        found = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        parts = consumer.committed([TopicPartition(topic, p) for p in found], timeout=10)
        ends = [consumer.get_watermark_offsets(part, timeout=10)[1] for part in parts]
        return all(part.offset >= end for part, end in zip(parts, ends, strict=True))
    finally:
        consumer.close()
