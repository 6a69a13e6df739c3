"""End-to-end freshness of written feature rows, per row, into two histograms (on the
writer's path, and cheap there: README, Benchmarks)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from featurestore import metrics
from featurestore.ingest.write_batch import DecodedBatch


def _epoch_seconds(times: pa.Array | pa.ChunkedArray, unit_per_s: float) -> np.ndarray:
    """Non-null timestamps as Unix seconds."""
    values = times.drop_null().cast(pa.int64()).to_numpy()
    return np.asarray(values, dtype=np.float64) / unit_per_s


def observe(batch: DecodedBatch, committed_at: float, *, online_at: float) -> None:
    """Count each row's event_timestamp -> DuckDB commit and, for rows with a Kafka
    timestamp, Kafka timestamp -> online-store update (Unix seconds in, ages >= 0 out:
    a producer's clock ahead of this host's counts as fresh, not as negative)."""
    events = _epoch_seconds(batch.rows.column("event_timestamp"), 1e6)
    metrics.FRESHNESS_EVENT_TO_COMMIT.observe_many(np.maximum(committed_at - events, 0.0))
    kafka = _epoch_seconds(batch.kafka_timestamps, 1e3)
    metrics.FRESHNESS_KAFKA_TO_ONLINE.observe_many(np.maximum(online_at - kafka, 0.0))
