"""Kafka offset spans of committed write batches: what makes a write exactly once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class OffsetSpan:
    """The Kafka messages one write batch covers: topic, partition, first and last offset."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True)
class WriteResult:
    """What one write batch did: rows inserted, rows skipped as already written."""

    inserted: int
    duplicates: int


Covering = list[tuple[int, int, dt.datetime | None]]


def covering(cur: duckdb.DuckDBPyConnection, span: OffsetSpan) -> Covering:
    """The committed batches of the span's partition that overlap it: first and last offset,
    and the created_at of the rows each inserted (null when none), newest first."""
    return cur.execute(
        "SELECT first_offset, last_offset, "
        "CASE WHEN row_count > 0 THEN coalesce(created_at, committed_at) END "
        "FROM ingested_batches WHERE topic = ? AND kafka_partition = ? "
        "AND last_offset >= ? AND first_offset <= ? ORDER BY 3 DESC NULLS FIRST",
        [span.topic, span.partition, span.first_offset, span.last_offset],
    ).fetchall()


def seen(offsets: pa.Array, done: Covering) -> pa.Array:
    """Whether a committed batch covers each offset."""
    seen = pc.is_in(offsets, pa.array([], pa.int64()))
    for lo, hi, _ in done:
        in_range = pc.and_(pc.greater_equal(offsets, lo), pc.less_equal(offsets, hi))
        seen = pc.or_(seen, in_range)
    return seen


def unwritten(
    cur: duckdb.DuckDBPyConnection, rows: pa.Table, offsets: pa.Array, span: OffsetSpan
) -> pa.Table:
    """The rows whose offsets no committed batch of the span's partition covers."""
    done = covering(cur, span)
    return rows.filter(pc.invert(seen(offsets, done))) if done else rows


def first_created_at(offsets: pa.Array, done: Covering) -> pa.Array:
    """Each offset's created_at in DuckDB (null when not written): that of the earliest
    covering batch that inserted rows (the one that wrote it)."""
    created = pa.nulls(len(offsets), pa.timestamp("us"))
    for lo, hi, at in done:  # newest first: the earliest is applied last
        if at is not None:
            in_range = pc.and_(pc.greater_equal(offsets, lo), pc.less_equal(offsets, hi))
            created = pc.if_else(in_range, pa.scalar(at, pa.timestamp("us")), created)
    return created


def record_span(
    cur: duckdb.DuckDBPyConnection,
    span: OffsetSpan,
    rows: int,
    inserted: int,
    created_at: dt.datetime | None = None,
) -> WriteResult:
    """Record a batch's offset span in its transaction (resume_offset walks these)."""
    duplicates = rows - inserted
    cur.execute(
        "INSERT INTO ingested_batches (topic, kafka_partition, first_offset, "
        "last_offset, row_count, duplicate_rows, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            span.topic,
            span.partition,
            span.first_offset,
            span.last_offset,
            inserted,
            duplicates,
            created_at,
        ],
    )
    return WriteResult(inserted=inserted, duplicates=duplicates)


def resume_position(cur: duckdb.DuckDBPyConnection, topic: str, partition: int, start: int) -> int:
    """The first offset from `start` that no recorded span covers (the bridge resumes there),
    on the cursor's snapshot."""
    ranges = cur.execute(
        "SELECT first_offset, last_offset FROM ingested_batches "
        "WHERE topic = ? AND kafka_partition = ? AND last_offset >= ? ORDER BY first_offset",
        [topic, partition, start],
    ).fetchall()
    position = start
    for lo, hi in ranges:
        if lo > position:
            break
        position = max(position, hi + 1)
    return position
