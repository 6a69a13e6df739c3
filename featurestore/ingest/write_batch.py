"""The write-batch wire format between the bridge and the DuckDB service: Arrow IPC."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from featurestore.arrow_ipc import decode_table, encode_table

BATCH_SCHEMA = pa.schema(
    [
        ("entity_id", pa.string()),
        ("feature_name", pa.string()),
        ("value", pa.float64()),
        ("event_timestamp", pa.timestamp("us")),
        ("offset", pa.int64()),
        # Each row's Kafka message timestamp (null when unknown), for the freshness metrics.
        ("kafka_timestamp", pa.timestamp("ms")),
    ]
)
# Batches encoded before kafka_timestamp existed (still queued during an upgrade).
_WITHOUT_KAFKA_TIME = pa.schema(list(BATCH_SCHEMA)[:-1])


@dataclass(frozen=True)
class DecodedBatch:
    """A write batch's feature rows, with each row's Kafka offset and timestamp."""

    rows: pa.Table
    offsets: pa.Array
    kafka_timestamps: pa.Array


def _with_kafka_time(table: pa.Table) -> pa.Table:
    if "kafka_timestamp" in table.column_names:
        return table
    return table.append_column("kafka_timestamp", pa.nulls(table.num_rows, pa.timestamp("ms")))


def encode(table: pa.Table) -> bytes:
    """Serialise a batch table (BATCH_SCHEMA; kafka_timestamp may be left out: null) to
    Arrow IPC stream bytes."""
    # LZ4 shrinks a batch several times over for little CPU (README, Benchmarks); Celery's Redis
    # transport then base64- and JSON-encodes the payload, which costs far more per byte.
    return encode_table(_with_kafka_time(table).cast(BATCH_SCHEMA), compression="lz4")


def events_by_offset(payload: bytes) -> dict[int, list[dict[str, object]]]:
    """A batch's rows as events (the wire format's fields), grouped by source offset."""
    table, offsets = decode(payload)
    grouped: dict[int, list[dict[str, object]]] = {}
    for offset, row in zip(offsets.to_pylist(), table.to_pylist(), strict=True):
        row["event_timestamp"] = row["event_timestamp"].isoformat() + "Z"
        grouped.setdefault(offset, []).append(row)
    return grouped


def decode_batch(payload: bytes) -> DecodedBatch:
    """Parse Arrow IPC bytes into feature rows, per-row Kafka offsets and timestamps."""
    table = decode_table(payload)
    if table.schema == _WITHOUT_KAFKA_TIME:
        table = _with_kafka_time(table)
    if table.schema != BATCH_SCHEMA:
        raise ValueError(f"write batch has schema {table.schema}, expected {BATCH_SCHEMA}")
    return DecodedBatch(
        table.drop_columns(["offset", "kafka_timestamp"]),
        table.column("offset").combine_chunks(),
        table.column("kafka_timestamp").combine_chunks(),
    )


def decode(payload: bytes) -> tuple[pa.Table, pa.Array]:
    """Parse Arrow IPC bytes into (feature rows, per-row Kafka offsets)."""
    batch = decode_batch(payload)
    return batch.rows, batch.offsets
