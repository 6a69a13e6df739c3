"""The single writer's exactly-once insert, resume offsets and the read guard (no services)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore.errors import QueryError, ReadOnlyError
from featurestore.store.database import OffsetSpan, Store


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "entity_id": [f"e{i}" for i in range(start, start + n)],
            "feature_name": ["f"] * n,
            "value": [float(i) for i in range(start, start + n)],
            "event_timestamp": pa.array([dt.datetime(2024, 1, 1)] * n, pa.timestamp("us")),
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "features.duckdb")


def count(store: Store) -> int:
    return int(store.read("SELECT count(*) AS n FROM features", None).column("n")[0].as_py())


def test_redelivered_batch_is_skipped(store: Store) -> None:
    span = OffsetSpan("features", 0, 10, 12)
    offsets = pa.array([10, 11, 12], pa.int64())
    first = store.write_batch(rows(3), offsets, span)
    again = store.write_batch(rows(3), offsets, span)
    assert (first.inserted, first.duplicates) == (3, 0)
    assert (again.inserted, again.duplicates) == (0, 3)
    assert count(store) == 3


def test_overlapping_batch_keeps_only_new_offsets(store: Store) -> None:
    store.write_batch(rows(3), pa.array([0, 1, 2], pa.int64()), OffsetSpan("features", 0, 0, 2))
    result = store.write_batch(
        rows(4, start=2), pa.array([2, 3, 3, 4], pa.int64()), OffsetSpan("features", 0, 2, 4)
    )
    assert (result.inserted, result.duplicates) == (3, 1)
    ids = store.read("SELECT entity_id FROM features ORDER BY entity_id", None)
    assert ids.column("entity_id").to_pylist() == ["e0", "e1", "e2", "e3", "e4", "e5"]


def test_same_offsets_on_another_partition_are_not_duplicates(store: Store) -> None:
    offsets = pa.array([0, 1], pa.int64())
    store.write_batch(rows(2), offsets, OffsetSpan("features", 0, 0, 1))
    result = store.write_batch(rows(2), offsets, OffsetSpan("features", 1, 0, 1))
    assert result.inserted == 2


def test_resume_offset_walks_contiguous_spans_only(store: Store) -> None:
    for first, last in [(0, 9), (10, 19), (30, 39)]:
        store.write_batch(
            rows(1), pa.array([first], pa.int64()), OffsetSpan("features", 0, first, last)
        )
    assert store.resume_offset("features", 0, 0) == 20
    assert store.resume_offset("features", 0, 25) == 25
    assert store.resume_offset("features", 0, 30) == 40
    assert store.resume_offset("features", 1, 0) == 0


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSERT INTO features (entity_id) VALUES ('x')", "SELECT only, got INSERT"),
        ("DELETE FROM features", "got DELETE"),
        ("SELECT 1; SELECT 2", "exactly one statement, got 2"),
        ("CREATE TABLE t (a INT)", "got CREATE"),
    ],
)
def test_read_path_refuses_anything_but_one_select(store: Store, sql: str, reason: str) -> None:
    with pytest.raises(ReadOnlyError, match=reason):
        store.read(sql, None)
    assert count(store) == 0


def test_read_errors_carry_duckdbs_message(store: Store) -> None:
    with pytest.raises(QueryError, match="no_such_table"):
        store.read("SELECT * FROM no_such_table", None)


def test_parameters_are_values_not_sql(store: Store) -> None:
    tricky = "x'); DROP TABLE features; --"
    store.write_batch(
        rows(1).set_column(0, "entity_id", pa.array([tricky])),
        pa.array([0], pa.int64()),
        OffsetSpan("features", 0, 0, 0),
    )
    found = store.read("SELECT entity_id FROM features WHERE entity_id = ?", [tricky])
    assert found.column("entity_id").to_pylist() == [tricky]
