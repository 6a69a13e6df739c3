"""The write path's Arrow packing of online-store updates gives what the SQL of the rebuild
gives (the same newest value of each (entity, feature), the same fields), or hands the
batch back to the SQL when it cannot."""

from __future__ import annotations

import datetime as dt
import random

import duckdb
import pyarrow as pa
import pytest

from featurestore.store.online import MAX_FIELDS_PER_RECORD, online_updates_sql
from featurestore.store.online_pack import packed_updates

T0 = dt.datetime(2024, 1, 1)
Unpacked = dict[tuple[str, str], tuple[int, float, int]]


def rows(seed: int, n: int, entities: int, features: int) -> pa.Table:
    """Random feature rows with many ties on event time, write time and value."""
    r = random.Random(seed)
    return pa.table(
        {
            "entity_id": [f"e{r.randrange(entities)}" for _ in range(n)],
            "feature_name": [f"f{r.randrange(features)}" for _ in range(n)],
            "value": [r.choice([1.0, 2.5, -3.0, 0.1, 1e300, 1 / 3, -0.0]) for _ in range(n)],
            "event_timestamp": pa.array(
                [T0 + dt.timedelta(seconds=r.randrange(3)) for _ in range(n)], pa.timestamp("us")
            ),
            "created_at": pa.array(
                [T0 + dt.timedelta(microseconds=r.randrange(3)) for _ in range(n)],
                pa.timestamp("us"),
            ),
        }
    )


def by_sql(table: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.register("batch_rows", table)
    return con.sql(online_updates_sql("batch_rows")).to_arrow_table()


def unpack(updates: pa.Table) -> Unpacked:
    """Each (entity, feature) of packed updates with (event micros, value, created micros)."""
    found: Unpacked = {}
    for entity, packed in zip(
        updates.column("entity_id").to_pylist(), updates.column("updates").to_pylist(), strict=True
    ):
        assert packed.endswith("\x1e")
        for record in packed.split("\x1e")[:-1]:
            feature, stored = record.split("\x1f")
            micros, value, created = stored.split(":")
            assert (entity, feature) not in found
            found[(entity, feature)] = (int(micros), float(value), int(created))
    return found


@pytest.mark.parametrize(
    ("seed", "n", "entities", "features"),
    [(1, 1, 1, 1), (2, 60, 4, 3), (3, 2000, 300, 8), (4, 3000, 3000, 1)],
)
def test_the_same_newest_values_as_the_sql(seed: int, n: int, entities: int, features: int) -> None:
    table = rows(seed, n, entities, features)
    packed = packed_updates(table)
    assert packed is not None
    assert unpack(packed) == unpack(by_sql(table))
    # One string per entity, as the update script takes them.
    assert packed.num_rows == len(set(table.column("entity_id").to_pylist()))


def test_the_newest_wins_by_event_time_then_write_then_value() -> None:
    later, after = T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(microseconds=1)
    given = [
        ("a", "f", 9.0, T0, T0),
        ("a", "f", 1.0, later, T0),  # the later event, though written with the first
        ("b", "g", 2.0, T0, after),  # the same event time, written last
        ("b", "g", 7.0, T0, T0),
        ("c", "h", 4.0, T0, T0),
        ("c", "h", 5.0, T0, T0),  # the same event time and write: the larger value
    ]
    table = pa.table(
        {
            "entity_id": [g[0] for g in given],
            "feature_name": [g[1] for g in given],
            "value": [g[2] for g in given],
            "event_timestamp": pa.array([g[3] for g in given], pa.timestamp("us")),
            "created_at": pa.array([g[4] for g in given], pa.timestamp("us")),
        }
    )
    packed = packed_updates(table)
    assert packed is not None
    t0 = 1_704_067_200_000_000
    assert unpack(packed) == {
        ("a", "f"): (t0 + 1_000_000, 1.0, t0),
        ("b", "g"): (t0, 2.0, t0 + 1),
        ("c", "h"): (t0, 5.0, t0),
    }


def test_nulls_and_wide_entities_are_left_to_the_sql() -> None:
    with_null = rows(5, 10, 2, 2)
    with_null = with_null.set_column(2, "value", pa.array([None] + [1.0] * 9, pa.float64()))
    assert packed_updates(with_null) is None
    wide = rows(6, MAX_FIELDS_PER_RECORD + 1, 1, 1).set_column(
        1, "feature_name", pa.array([f"f{i}" for i in range(MAX_FIELDS_PER_RECORD + 1)])
    )
    assert packed_updates(wide) is None
    assert unpack(by_sql(wide))  # the SQL splits it into records of at most 500 fields


def test_a_batch_without_rows_updates_nothing() -> None:
    # A write batch whose messages were all dead-lettered has no rows: the packing failed
    # with a TypeError, and the batch was retried and dead-lettered while the stream waited.
    empty = rows(7, 5, 2, 2).slice(0, 0)
    updates = packed_updates(empty)
    assert updates is not None and updates.num_rows == 0
    assert unpack(updates) == unpack(by_sql(empty)) == {}
