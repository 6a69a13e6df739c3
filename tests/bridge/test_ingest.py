"""Files -> Kafka -> bridge -> Celery -> DuckDB, against the real stack: exactly once,
the online store, and bad input going to the dead-letter topic."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer

from bridge.producer import FileProducer
from featurestore.settings import Settings
from featurestore.store.online import OnlineStore
from tasks.app import configure
from tests.helpers import (
    bridge_caught_up,
    expected_checksum,
    stored_checksum,
    wait_for_count,
    wait_for_online,
    wait_until,
    write_events,
)

pytestmark = pytest.mark.integration


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}_"


def test_files_arrive_exactly_once(stack: Settings, tmp_path: Path) -> None:
    app = configure(stack)
    files = {}
    for suffix, entities in ((".parquet", 3000), (".csv", 200)):
        tag = prefix()
        path = tmp_path / f"events{suffix}"
        files[tag] = (path, write_events(path, tag, entities))
    report = FileProducer(stack, rows_per_message=250).run([p for p, _n in files.values()])
    assert report.rows_rejected == 0
    assert report.rows_sent == sum(n for _p, n in files.values())
    for tag, (path, rows) in files.items():
        assert wait_for_count(app, tag, rows) == rows
        assert stored_checksum(app, tag) == expected_checksum(path, tag)
    # Every batch is committed, none left to resend: a duplicate would be in by now.
    assert wait_until(lambda: bridge_caught_up(stack), timeout=60)
    for tag, (path, _rows) in files.items():
        assert stored_checksum(app, tag) == expected_checksum(path, tag)


def test_online_store_keeps_the_newest_value_whatever_the_arrival_order(
    stack: Settings, tmp_path: Path
) -> None:
    app = configure(stack)
    tag = prefix()
    base = dt.datetime(2024, 3, 1)
    rows = [
        # arrival order: newest first for f0, oldest first for f1
        (f"{tag}a", "f0", 3.0, base + dt.timedelta(hours=3)),
        (f"{tag}a", "f0", 1.0, base + dt.timedelta(hours=1)),
        (f"{tag}a", "f1", 1.0, base + dt.timedelta(hours=1)),
        (f"{tag}a", "f1", 2.0, base + dt.timedelta(hours=2)),
        (f"{tag}b", "f0", 9.0, base),
    ]
    for written, (entity, feature, value, ts) in enumerate(rows, 1):  # one batch at a time
        path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
        path.write_text(
            orjson.dumps(
                {
                    "entity_id": entity,
                    "feature_name": feature,
                    "value": value,
                    "event_timestamp": ts.isoformat(),
                }
            ).decode()
            + "\n"
        )
        FileProducer(stack).run([path])
        assert wait_for_count(app, tag, written) == written
    online = OnlineStore(redis.Redis.from_url(stack.redis_url))
    latest = wait_for_online(online, [f"{tag}a"], 2)[f"{tag}a"]
    wait_for_online(online, [f"{tag}b"], 1)
    assert {k: (v.value, v.event_timestamp) for k, v in latest.items()} == {
        "f0": (3.0, base + dt.timedelta(hours=3)),
        "f1": (2.0, base + dt.timedelta(hours=2)),
    }
    assert online.get(f"{tag}b")["f0"].value == 9.0
    assert online.get(f"{tag}nobody") == {}


def _dead_letters(settings: Settings, wanted: set[int]) -> dict[int, str]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"dlq-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.dead_letter_topic])
    found: dict[int, str] = {}
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and not wanted <= set(found):
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            headers = {
                str(key): value.decode() if isinstance(value, bytes) else str(value)
                for key, value in list(msg.headers() or [])
            }
            found[int(headers["source_offset"])] = headers["reason"]
    finally:
        consumer.close()
    return found


NAN_MESSAGE = b'{"entity_id":"x","feature_name":"f","value":NaN,"event_timestamp":"2024-01-01"}'


def test_bad_input_goes_to_the_dead_letter_topic_and_the_rest_arrives(stack: Settings) -> None:
    app = configure(stack)
    tag = prefix()

    def good(n: int) -> bytes:
        return orjson.dumps(
            {
                "entity_id": f"{tag}{n}",
                "feature_name": "f",
                "value": n,
                "event_timestamp": "2024-05-01T12:00:00+02:00",
            }
        )

    bad = {
        b"{not json": "malformed JSON",
        orjson.dumps({"entity_id": f"{tag}x"}): "missing field",
        orjson.dumps(
            {
                "entity_id": f"{tag}x",
                "feature_name": "f",
                "value": "1",
                "event_timestamp": "2024-01-01",
            }
        ): "value must be a number",
        NAN_MESSAGE: "malformed JSON",
        orjson.dumps(
            {
                "entity_id": f"{tag}x",
                "feature_name": "f",
                "value": 1,
                "event_timestamp": "not a time",
            }
        ): "is not ISO-8601",
        b"": "empty message",
    }
    producer = Producer(
        {"bootstrap.servers": stack.kafka_bootstrap, "message.max.bytes": 10_000_000}
    )
    offsets: dict[bytes, int] = {}
    errors: list[KafkaError] = []

    def delivered(payload: bytes) -> Callable[[KafkaError | None, Message], None]:
        def callback(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)
            else:
                offsets[payload] = msg.offset() or 0

        return callback

    sequence = [good(1), *bad, good(2)]
    for payload in sequence[:4]:
        producer.produce(stack.features_topic, payload, on_delivery=delivered(payload))
    # Over the broker's message size limit: refused by the broker, never in the topic.
    huge = b"[" + b" " * 2_000_000 + b"]"
    producer.produce(stack.features_topic, huge, on_delivery=delivered(huge))
    for payload in sequence[4:]:
        producer.produce(stack.features_topic, payload, on_delivery=delivered(payload))
    producer.flush(30)
    assert [e.code() for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]

    assert wait_for_count(app, tag, 2) == 2
    dead = _dead_letters(stack, wanted={offsets[payload] for payload in bad})
    for payload, reason in bad.items():
        assert reason in dead.get(offsets[payload], ""), (payload, offsets, dead)
    assert offsets[good(1)] not in dead and offsets[good(2)] not in dead
    online_store = OnlineStore(redis.Redis.from_url(stack.redis_url))
    online = wait_for_online(online_store, [f"{tag}1"], 1)[f"{tag}1"]
    assert online["f"].event_timestamp == dt.datetime(2024, 5, 1, 10, 0)
