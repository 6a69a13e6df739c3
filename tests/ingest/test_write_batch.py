"""The write-batch format: Kafka timestamps optional on encode, old batches still decode."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from featurestore.arrow_ipc import encode_table
from featurestore.ingest import write_batch

ROWS = {
    "entity_id": ["a", "b"],
    "feature_name": ["f", "f"],
    "value": [1.0, 2.0],
    "event_timestamp": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)],
    "offset": [3, 4],
}


def test_a_table_without_kafka_timestamps_encodes_them_as_null() -> None:
    batch = write_batch.decode_batch(write_batch.encode(pa.table(ROWS)))
    assert batch.kafka_timestamps.null_count == 2
    assert batch.offsets.to_pylist() == [3, 4]
    assert batch.rows.column("entity_id").to_pylist() == ["a", "b"]


def test_a_batch_queued_before_kafka_timestamps_existed_still_decodes() -> None:
    old_schema = pa.schema(list(write_batch.BATCH_SCHEMA)[:-1])
    payload = encode_table(pa.table(ROWS).cast(old_schema))
    rows, offsets = write_batch.decode(payload)
    assert offsets.to_pylist() == [3, 4]
    assert rows.num_rows == 2
    assert write_batch.decode_batch(payload).kafka_timestamps.null_count == 2


def test_another_schema_is_refused_with_both_schemas_named() -> None:
    payload = encode_table(pa.table({"entity_id": ["a"]}))
    with pytest.raises(ValueError, match="write batch has schema entity_id: string"):
        write_batch.decode_batch(payload)
