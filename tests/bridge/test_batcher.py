"""Batching by rows and by wait; spans cover dead-lettered messages (no services)."""

from __future__ import annotations

import orjson
import pytest

from bridge.batcher import PREDICTIONS, Batcher
from featurestore.errors import ValidationError
from featurestore.ingest import write_batch
from featurestore.ingest.events import parse_message


def events(n: int, entity: str = "e") -> bytes:
    return orjson.dumps(
        [
            {
                "entity_id": f"{entity}{i}",
                "feature_name": "f",
                "value": i,
                "event_timestamp": "2024-01-01T00:00:00Z",
            }
            for i in range(n)
        ]
    )


def test_batch_closes_when_full() -> None:
    batcher = Batcher(max_rows=10, max_wait_s=60)
    for offset in range(3):
        batcher.add("t", 0, offset, parse_message(events(4)))
    ready = batcher.due(now=0.0)
    assert len(ready) == 1
    assert len(ready[0].columns) == 12
    assert (ready[0].first_offset, ready[0].last_offset) == (0, 2)
    assert batcher.due(now=0.0) == []


def test_batch_closes_after_max_wait() -> None:
    batcher = Batcher(max_rows=1000, max_wait_s=0.5)
    batcher.add("t", 0, 7, parse_message(events(1)))
    started = batcher.due(now=0.0)
    assert started == []
    [late] = batcher.due(now=10**9)
    assert late.span.first_offset == 7


def test_an_idle_writer_takes_the_open_batch_at_once() -> None:
    batcher = Batcher(max_rows=1000, max_wait_s=60)
    batcher.add("t", 0, 7, parse_message(events(1)))
    assert batcher.due(now=0.0, idle=False) == []
    [early] = batcher.due(now=0.0, idle=True)
    assert (early.span.first_offset, len(early.columns)) == (7, 1)
    assert batcher.due(now=0.0, idle=True) == []


def prediction_record() -> bytes:
    return orjson.dumps(
        {
            "request_id": "r1",
            "model_id": "m",
            "model_version": "1",
            "entity_id": "e1",
            "served_at": "2024-01-01T00:00:00Z",
            "source": "predict",
            "features": [{"name": "a", "value": 1.0, "origin": "online", "event_timestamp": None}],
            "outputs": [{"name": "score", "values": [0.5], "labels": []}],
        }
    )


def test_an_idle_writer_does_not_take_prediction_records_early() -> None:
    batcher = Batcher(max_rows=1000, max_wait_s=0.5, kinds={"predictions": PREDICTIONS})
    batcher.add("predictions", 0, 3, PREDICTIONS.parse(prediction_record(), None))
    batcher.add("features", 0, 9, parse_message(events(1)))
    [features] = batcher.due(now=0.0, idle=True)
    assert features.topic == "features"
    assert batcher.due(now=0.0, idle=True) == []
    [late] = batcher.due(now=10**9, idle=False)
    assert (late.topic, late.span.first_offset, len(late.columns)) == ("predictions", 3, 1)


def test_dead_lettered_message_is_inside_the_span_but_adds_no_rows() -> None:
    batcher = Batcher(max_rows=1000, max_wait_s=60)
    batcher.add("t", 0, 5, parse_message(events(2)))
    batcher.add("t", 0, 6, None)
    batcher.add("t", 0, 7, parse_message(events(1, "z")))
    [pending] = batcher.due(flush=True)
    assert (pending.span.first_offset, pending.span.last_offset) == (5, 7)
    rows, offsets = write_batch.decode(pending.encode())
    assert offsets.to_pylist() == [5, 5, 7]
    assert rows.column("entity_id").to_pylist() == ["e0", "e1", "z0"]


def test_partitions_batch_separately() -> None:
    batcher = Batcher(max_rows=1000, max_wait_s=60)
    batcher.add("t", 0, 1, parse_message(events(1)))
    batcher.add("t", 1, 1, parse_message(events(1)))
    assert sorted(p.partition for p in batcher.due(flush=True)) == [0, 1]


def test_each_row_carries_its_messages_kafka_timestamp() -> None:
    batcher = Batcher(max_rows=1000, max_wait_s=60)
    batcher.add("t", 0, 5, parse_message(events(2)), 1_700_000_000_123)
    batcher.add("t", 0, 6, None, 1_700_000_000_200)
    batcher.add("t", 0, 7, parse_message(events(1, "z")), None)
    [pending] = batcher.due(flush=True)
    batch = write_batch.decode_batch(pending.encode())
    times = batch.kafka_timestamps.cast("int64").to_pylist()
    assert times == [1_700_000_000_123, 1_700_000_000_123, None]
    assert batch.offsets.to_pylist() == [5, 5, 7]
    assert batch.rows.column_names == ["entity_id", "feature_name", "value", "event_timestamp"]


def test_prediction_records_are_json_only() -> None:
    with pytest.raises(ValidationError, match="content-type 'application/vnd\\.apache\\.arrow"):
        PREDICTIONS.parse(b"ARROW1", "application/vnd.apache.arrow.stream")
    with pytest.raises(ValidationError, match="empty message"):
        PREDICTIONS.parse(b"", "application/json")


def test_prediction_batches_wait_their_own_time() -> None:
    batcher = Batcher(
        max_rows=1000,
        max_wait_s=0.5,
        kinds={"predictions": PREDICTIONS},
        waits={"predictions": 2.0},
    )
    batcher.add("predictions", 0, 3, PREDICTIONS.parse(prediction_record(), None))
    batcher.add("features", 0, 9, parse_message(events(1)))
    opened = batcher._open[("predictions", 0)].started
    [features] = batcher.due(now=opened + 1.0)
    assert features.topic == "features"
    assert batcher.due(now=opened + 1.9) == []
    [late] = batcher.due(now=opened + 2.0)
    assert (late.topic, late.span.first_offset, len(late.columns)) == ("predictions", 3, 1)
