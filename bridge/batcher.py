"""Groups validated events of one partition into write batches bounded by rows and wait."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from featurestore.ingest import write_batch
from featurestore.ingest.events import Columns
from featurestore.store.database import OffsetSpan


@dataclass
class PendingBatch:
    """Events gathered for one write task, and the message offsets they came from."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    started: float = field(default_factory=time.monotonic)
    columns: Columns = field(default_factory=Columns)
    offsets: list[int] = field(default_factory=list)
    dead_letters: int = 0

    @property
    def span(self) -> OffsetSpan:
        """Offsets of every message consumed into this batch, dead-lettered ones included."""
        return OffsetSpan(self.topic, self.partition, self.first_offset, self.last_offset)

    def add(self, offset: int, events: Columns | None) -> None:
        """Take one consumed message: its events, or None when it was dead-lettered."""
        self.last_offset = offset
        if events is None:
            self.dead_letters += 1
        else:
            self.columns.extend(events)
            self.offsets.extend([offset] * len(events))

    def encode(self) -> bytes:
        """Arrow IPC bytes of the batch (the write task's payload)."""
        c = self.columns
        table = pa.table(
            {
                "entity_id": pa.array(c.entity_id, pa.string()),
                "feature_name": pa.array(c.feature_name, pa.string()),
                "value": pa.array(c.value, pa.float64()),
                "event_timestamp": pa.array(c.event_timestamp, pa.int64()).cast(pa.timestamp("us")),
                "offset": pa.array(self.offsets, pa.int64()),
            }
        )
        return write_batch.encode(table)


class Batcher:
    """One open batch per partition; a batch closes at max_rows or after max_wait_s."""

    def __init__(self, max_rows: int, max_wait_s: float) -> None:
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._open: dict[tuple[str, int], PendingBatch] = {}
        self._full: list[PendingBatch] = []

    def add(self, topic: str, partition: int, offset: int, events: Columns | None) -> None:
        """Add a consumed message to its partition's open batch; close the batch when full."""
        key = (topic, partition)
        pending = self._open.get(key)
        if pending is None:
            pending = self._open[key] = PendingBatch(topic, partition, offset, offset)
        pending.add(offset, events)
        if len(pending.columns) >= self.max_rows:
            self._full.append(self._open.pop(key))

    def due(self, now: float | None = None, *, flush: bool = False) -> list[PendingBatch]:
        """Every closed batch, plus open ones past max_wait_s (or all of them when flushing)."""
        now = time.monotonic() if now is None else now
        ready, self._full = self._full, []
        expired = [
            key for key, p in self._open.items() if flush or now - p.started >= self.max_wait_s
        ]
        return ready + [self._open.pop(key) for key in expired]

    def drop(self, topic: str, partition: int) -> None:
        """Forget the batches of a partition this consumer no longer owns."""
        self._open.pop((topic, partition), None)
        self._full = [p for p in self._full if (p.topic, p.partition) != (topic, partition)]
