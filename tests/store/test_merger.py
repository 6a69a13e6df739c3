"""The latest-values table against a brute-force newest-row computation (no services)."""

from __future__ import annotations

import datetime as dt
import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from featurestore.settings import Settings
from featurestore.store import merger
from featurestore.store.database import OffsetSpan, Store

T0 = dt.datetime(2024, 3, 1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "features.duckdb")


def random_batch(rng: random.Random, n: int) -> pa.Table:
    """Few entities, features and timestamps, so that ties on event_timestamp are common."""
    return pa.table(
        {
            "entity_id": [f"e{rng.randrange(20)}" for _ in range(n)],
            "feature_name": [f"f{rng.randrange(4)}" for _ in range(n)],
            "value": [float(rng.randrange(50)) for _ in range(n)],
            "event_timestamp": pa.array(
                [T0 + dt.timedelta(hours=rng.randrange(6)) for _ in range(n)], pa.timestamp("us")
            ),
        }
    )


def write(store: Store, table: pa.Table, first_offset: int) -> None:
    offsets = pa.array(range(first_offset, first_offset + table.num_rows), pa.int64())
    span = OffsetSpan("t", 0, first_offset, first_offset + table.num_rows - 1)
    store.write_batch(table, offsets, span)


def brute_force(store: Store) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Newest row per pair by (event_timestamp, created_at, value), computed in Python."""
    rows = (
        store.cursor()
        .execute("SELECT entity_id, feature_name, value, event_timestamp, created_at FROM features")
        .fetchall()
    )
    best: dict[tuple[str, str], tuple[Any, ...]] = {}
    for entity, feature, value, ts, created in rows:
        key = (ts, created, value)
        if (entity, feature) not in best or key > best[(entity, feature)][1:]:
            best[(entity, feature)] = (value, ts, created, value)
    return {pair: (v[0], v[1]) for pair, v in best.items()}


def stored(store: Store) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = (
        store.cursor()
        .execute("SELECT entity_id, feature_name, value, event_timestamp FROM latest_features")
        .fetchall()
    )
    return {(e, f): (v, ts) for e, f, v, ts in rows}


def test_merges_match_brute_force_with_ties_across_batches(store: Store) -> None:
    rng = random.Random(7)
    offset = 0
    for round_ in range(6):
        # Several writes between merges, and merges with nothing new in between.
        for _ in range(round_ % 3 + 1):
            table = random_batch(rng, rng.randrange(1, 60))
            write(store, table, offset)
            offset += table.num_rows
        assert merger.merge(store.cursor()).rows > 0
        assert stored(store) == brute_force(store)
        assert merger.merge(store.cursor()).rows == 0


def test_an_older_event_written_later_does_not_replace_a_newer_one(store: Store) -> None:
    def one(value: float, hours: int) -> pa.Table:
        return pa.table(
            {
                "entity_id": ["e"],
                "feature_name": ["f"],
                "value": [value],
                "event_timestamp": pa.array([T0 + dt.timedelta(hours=hours)], pa.timestamp("us")),
            }
        )

    write(store, one(1.0, 5), 0)
    merger.merge(store.cursor())
    write(store, one(2.0, 1), 1)
    merger.merge(store.cursor())
    assert stored(store) == {("e", "f"): (1.0, T0 + dt.timedelta(hours=5))}
    write(store, one(0.5, 5), 2)  # same event time, written later: it wins
    merger.merge(store.cursor())
    assert stored(store) == {("e", "f"): (0.5, T0 + dt.timedelta(hours=5))}


def test_a_reopened_store_resumes_from_the_watermark(tmp_path: Path) -> None:
    rng = random.Random(3)
    store = Store(tmp_path / "features.duckdb")
    write(store, random_batch(rng, 40), 0)
    merger.merge(store.cursor())
    through = merger.merged_through(store.cursor())
    write(store, random_batch(rng, 40), 40)  # written, not merged, when the process stops
    store.close()

    reopened = Store(tmp_path / "features.duckdb")
    assert merger.merged_through(reopened.cursor()) == through
    merger.merge(reopened.cursor())
    assert stored(reopened) == brute_force(reopened)
    assert merger.merged_through(reopened.cursor()) > through


def test_a_merge_takes_whole_writes_up_to_its_row_cap(store: Store) -> None:
    rng = random.Random(11)
    sizes = [30, 30, 30, 80]
    offset = 0
    for size in sizes:
        write(store, random_batch(rng, size), offset)
        offset += size
    steps = []
    while True:
        result = merger.merge(store.cursor(), max_rows=70)
        if not result.rows:
            break
        steps.append(result.more)
    # 30+30, then 30 (30+80 > 70), then the 80-row write alone (one write at least)
    assert steps == [True, True, False]
    assert stored(store) == brute_force(store)


def test_merger_thread_catches_up_and_reports_when_merged(store: Store) -> None:
    rng = random.Random(5)
    write(store, random_batch(rng, 30), 0)  # before the merger starts
    table_merger = merger.Merger(store.cursor, interval_s=0.05)
    table_merger.start()
    try:
        assert table_merger.wait_merged(timeout=30)
        assert stored(store) == brute_force(store)
        write(store, random_batch(rng, 30), 30)
        table_merger.written()
        assert table_merger.wait_merged(timeout=30)
        assert stored(store) == brute_force(store)
    finally:
        table_merger.stop()


def test_merger_thread_runs_at_the_niceness_it_is_given(store: Store) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    table_merger = merger.Merger(store.cursor, interval_s=0.05, nice=4)
    table_merger.start()
    try:
        assert table_merger.wait_merged(timeout=30)
        tid = table_merger._thread.native_id
        assert tid is not None
        assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, base + 4)
        assert os.getpriority(os.PRIO_PROCESS, 0) == base, "the starter's own is unchanged"
    finally:
        table_merger.stop()


def test_the_store_checkpoints_at_the_wal_size_its_settings_give(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", duckdb_checkpoint_threshold_mib=48)
    store = Store.from_settings(settings)
    try:
        query = "SELECT current_setting('checkpoint_threshold')"
        assert store.cursor().execute(query).fetchall() == [("48.0 MiB",)]
    finally:
        store.close()


def test_writes_after_the_clock_steps_back_are_still_merged(store: Store) -> None:
    rng = random.Random(13)
    write(store, random_batch(rng, 20), 0)
    merger.merge(store.cursor())
    # As if the clock had been an hour ahead for the next write and then stepped back.
    store._last_created_at = merger.merged_through(store.cursor()) + dt.timedelta(hours=1)
    write(store, random_batch(rng, 20), 20)
    merger.merge(store.cursor())
    write(store, random_batch(rng, 20), 40)  # the clock is "behind" the last write now
    # It shares the watermark's created_at, so that whole group is merged again.
    assert merger.merge(store.cursor()).rows == 40
    assert stored(store) == brute_force(store)
