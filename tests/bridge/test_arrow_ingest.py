"""The Arrow content type through the real stack: a bulk load arrives exactly once, JSON and
Arrow messages mix on one topic, and a bad Arrow message goes to the dead-letter topic with
its reason."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Producer

from bridge.producer import FileProducer
from featurestore.arrow_ipc import encode_table
from featurestore.ingest.event_decode import ARROW_CONTENT_TYPE, encode_arrow
from featurestore.settings import Settings
from tasks.app import configure
from tests.bridge.test_ingest import _dead_letters
from tests.helpers import (
    bridge_caught_up,
    expected_checksum,
    run_cli,
    stored_checksum,
    wait_for_count,
    wait_until,
    write_events,
)

pytestmark = pytest.mark.integration

Headers = list[tuple[str, str | bytes | None]]
ARROW_HEADER: Headers = [("content-type", ARROW_CONTENT_TYPE.encode())]


def prefix() -> str:
    return f"a{uuid.uuid4().hex[:8]}_"


def test_a_bulk_load_in_arrow_arrives_exactly_once(stack: Settings, tmp_path: Path) -> None:
    app = configure(stack)
    tag = prefix()
    path = tmp_path / "events.parquet"
    rows = write_events(path, tag, 3000)
    report = FileProducer(stack, 2500, content_type=ARROW_CONTENT_TYPE).run([path])
    assert (report.rows_sent, report.messages) == (rows, 12)
    assert wait_for_count(app, tag, rows) == rows
    # Every batch is committed, none left to resend: a duplicate would be in by now.
    assert wait_until(lambda: bridge_caught_up(stack), timeout=60)
    assert stored_checksum(app, tag) == expected_checksum(path, tag)


def test_fstore_produce_arrow(stack: Settings, tmp_path: Path) -> None:
    app = configure(stack)
    tag = prefix()
    path = tmp_path / "events.csv"
    rows = write_events(path, tag, 300)
    done = run_cli(stack, "produce", "--arrow", "--rows-per-message", "1000", str(path))
    assert done.returncode == 0, done.stderr
    assert f"rows_sent={rows} rows_rejected=0 messages=3" in done.stdout
    assert wait_for_count(app, tag, rows) == rows
    # Every batch is committed, none left to resend: a duplicate would be in by now.
    assert wait_until(lambda: bridge_caught_up(stack), timeout=60)
    assert stored_checksum(app, tag) == expected_checksum(path, tag)


def test_bad_arrow_messages_are_dead_lettered_and_the_rest_arrives(stack: Settings) -> None:
    app = configure(stack)
    tag = prefix()
    when = dt.datetime(2024, 5, 1, 10)

    def table(entity: str, value: pa.Array) -> pa.Table:
        return pa.table(
            {
                "entity_id": [entity] * len(value),
                "feature_name": ["f"] * len(value),
                "value": value,
                "event_timestamp": [when] * len(value),
            }
        )

    json_event = {
        "entity_id": f"{tag}json",
        "feature_name": "f",
        "value": 1,
        "event_timestamp": "2024-05-01",
    }
    sends: list[tuple[bytes, Headers | None, str | None]] = [
        (encode_arrow(table(f"{tag}good", pa.array([1.0, 2.0]))), ARROW_HEADER, None),
        (
            encode_table(table(f"{tag}x", pa.array([1, 2]))),
            ARROW_HEADER,
            "value must be of Arrow type double",
        ),
        (
            encode_arrow(table(f"{tag}\x07", pa.array([1.0]))),
            ARROW_HEADER,
            "entity_id contains control characters",
        ),
        (orjson.dumps(json_event), ARROW_HEADER, "malformed Arrow IPC stream"),
        (
            orjson.dumps(json_event),
            [("content-type", b"text/csv")],
            "content-type 'text/csv' is not accepted",
        ),
        (orjson.dumps(json_event), None, None),
    ]
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    offsets: list[int] = []
    for payload, headers, _reason in sends:
        producer.produce(
            stack.features_topic,
            payload,
            headers=headers,
            on_delivery=lambda _err, msg: offsets.append(msg.offset() or 0),
        )
        producer.flush(30)
    assert wait_for_count(app, tag, 3) == 3
    wanted = {offset for offset, (_p, _h, reason) in zip(offsets, sends, strict=True) if reason}
    dead = _dead_letters(stack, wanted)
    for offset, (_payload, _headers, reason) in zip(offsets, sends, strict=True):
        if reason is None:
            assert offset not in dead
        else:
            assert reason in dead.get(offset, ""), (reason, dead)
