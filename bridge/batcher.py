"""Groups validated rows of one partition into write batches bounded by rows and wait.

Each topic's rows have a kind (BatchKind): feature events, or prediction records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from featurestore import constants
from featurestore.errors import ValidationError
from featurestore.ingest import predictions, write_batch
from featurestore.ingest.event_decode import JSON_CONTENT_TYPE, FeatureRows, parse_features
from featurestore.store.database import OffsetSpan


class Rows(Protocol):
    """Validated rows of one kind, gathered for a batch."""

    def __len__(self) -> int: ...

    def extend(self, other: Any, /) -> None:
        """Append the rows of another message."""
        ...


def _encode_features(rows: FeatureRows, offsets: list[int], times: list[int | None]) -> bytes:
    table = rows.table()
    table = table.append_column("offset", pa.array(offsets, pa.int64()))
    table = table.append_column(
        "kafka_timestamp", pa.array(times, pa.int64()).cast(pa.timestamp("ms"))
    )
    return write_batch.encode(table)


def _json_only(parse: Callable[[bytes | None], Rows]) -> Callable[[bytes | None, str | None], Rows]:
    def parse_json(raw: bytes | None, content_type: str | None) -> Rows:
        if content_type is not None and content_type != JSON_CONTENT_TYPE:
            raise ValidationError(
                f"content-type {content_type[:64]!r} is not accepted (use {JSON_CONTENT_TYPE})"
            )
        return parse(raw)

    return parse_json


@dataclass(frozen=True)
class BatchKind:
    """How one topic's messages become rows, a write task, and dead letters again."""

    task: str
    # a message's value and its Kafka header content-type (None: JSON) -> its rows
    parse: Callable[[bytes | None, str | None], Rows]
    new_rows: Callable[[], Rows]
    # rows, each row's offset and Kafka timestamp in ms (None: unknown) -> the payload
    encode: Callable[[Any, list[int], list[int | None]], bytes]
    by_offset: Callable[[bytes], dict[int, list[dict[str, object]]]]
    # Sent as soon as the writer is idle (group commit), or only when full or max_wait_s old.
    eager: bool = True


FEATURES = BatchKind(
    constants.TASK_WRITE_BATCH,
    parse_features,
    FeatureRows,
    _encode_features,
    write_batch.events_by_offset,
)
PREDICTIONS = BatchKind(
    constants.TASK_WRITE_PREDICTIONS,
    _json_only(predictions.parse_record),
    predictions.PredictionRows,
    lambda rows, offsets, _times: rows.encode(offsets),
    predictions.records_by_offset,
    # Nobody waits for a prediction's row, and sent eagerly at 500 Predicts/s they became
    # many small writes whose CPU, on the serving machine's cores, raised Predict's p99
    # (make bench-serve, README: Prediction log).
    eager=False,
)


@dataclass
class PendingBatch:
    """Rows gathered for one write task, and the message offsets they came from."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    started: float = field(default_factory=time.monotonic)
    kind: BatchKind = FEATURES
    columns: Rows = field(default_factory=FeatureRows)
    offsets: list[int] = field(default_factory=list)
    kafka_times: list[int | None] = field(default_factory=list)
    dead_letters: int = 0

    @property
    def span(self) -> OffsetSpan:
        """Offsets of every message consumed into this batch, dead-lettered ones included."""
        return OffsetSpan(self.topic, self.partition, self.first_offset, self.last_offset)

    def add(self, offset: int, events: Rows | None, kafka_time_ms: int | None = None) -> None:
        """Take one consumed message: its rows, or None when it was dead-lettered, and its
        Kafka timestamp (ms)."""
        self.last_offset = offset
        if events is None:
            self.dead_letters += 1
        else:
            self.columns.extend(events)
            self.offsets.extend([offset] * len(events))
            self.kafka_times.extend([kafka_time_ms] * len(events))

    def encode(self) -> bytes:
        """Arrow IPC bytes of the batch (the write task's payload)."""
        return self.kind.encode(self.columns, self.offsets, self.kafka_times)


class Batcher:
    """One open batch per partition; a batch closes at max_rows or after max_wait_s (a
    topic's own wait in `waits` when named there). A topic's rows are of its kind in
    `kinds`, feature events when not named there."""

    def __init__(
        self,
        max_rows: int,
        max_wait_s: float,
        kinds: Mapping[str, BatchKind] | None = None,
        waits: Mapping[str, float] | None = None,
    ) -> None:
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.kinds = dict(kinds or {})
        self.waits = dict(waits or {})
        self._open: dict[tuple[str, int], PendingBatch] = {}
        self._full: list[PendingBatch] = []

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        events: Rows | None,
        kafka_time_ms: int | None = None,
    ) -> None:
        """Add a consumed message (with its Kafka timestamp in ms, when known) to its
        partition's open batch; close the batch when full."""
        key = (topic, partition)
        pending = self._open.get(key)
        if pending is None:
            kind = self.kinds.get(topic, FEATURES)
            pending = self._open[key] = PendingBatch(
                topic, partition, offset, offset, kind=kind, columns=kind.new_rows()
            )
        pending.add(offset, events, kafka_time_ms)
        if len(pending.columns) >= self.max_rows:
            self._full.append(self._open.pop(key))

    def due(
        self, now: float | None = None, *, flush: bool = False, idle: bool = False
    ) -> list[PendingBatch]:
        """Every closed batch, plus open ones past max_wait_s, or all of them when flushing,
        and the eager kinds' ones when the writer is idle (nothing in flight)."""
        # Group commit: a light stream's events go at once instead of waiting out
        # max_wait_s (one event alone is servable about eight times sooner), while
        # under load a batch grows as long as the one before it is being written, up to
        # max_rows, so full-load batches keep their size (make bench-ingest, README).
        now = time.monotonic() if now is None else now
        ready, self._full = self._full, []
        expired = [
            key
            for key, p in self._open.items()
            if flush
            or (idle and p.kind.eager)
            or now - p.started >= self.waits.get(key[0], self.max_wait_s)
        ]
        return ready + [self._open.pop(key) for key in expired]

    def drop(self, topic: str, partition: int) -> None:
        """Forget the batches of a partition this consumer no longer owns."""
        self._open.pop((topic, partition), None)
        self._full = [p for p in self._full if (p.topic, p.partition) != (topic, partition)]
