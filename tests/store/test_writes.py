"""The single writer, each guarantee on its own (no services): a failed write leaves neither
rows nor a span, writes from many threads land exactly once, a batch made only of dead
letters records its span, and a write committing while a merge runs is merged next time."""

from __future__ import annotations

import datetime as dt
import random
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from featurestore.ingest import write_batch
from featurestore.store import merger
from featurestore.store.database import OffsetSpan, Store
from featurestore.store.online import online_updates_sql
from tests.store.test_merger import brute_force, random_batch, stored

T0 = dt.datetime(2024, 3, 1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "features.duckdb")


def rows(offsets: range, partition: int = 0) -> pa.Table:
    """One row per offset, whose entity names its partition and offset."""
    return pa.table(
        {
            "entity_id": [f"p{partition}_{o}" for o in offsets],
            "feature_name": ["f"] * len(offsets),
            "value": [float(o) for o in offsets],
            "event_timestamp": pa.array([T0] * len(offsets), pa.timestamp("us")),
        }
    )


def write(store: Store, offsets: range, partition: int = 0, topic: str = "t") -> Any:
    span = OffsetSpan(topic, partition, offsets.start, offsets.stop - 1)
    return store.write_batch(rows(offsets, partition), pa.array(offsets, pa.int64()), span)


def counts(store: Store) -> tuple[int, int]:
    """Rows in features, spans in ingested_batches."""
    cur = store.cursor()
    features = cur.execute("SELECT count(*) FROM features").fetchall()[0][0]
    spans = cur.execute("SELECT count(*) FROM ingested_batches").fetchall()[0][0]
    return int(features), int(spans)


def test_a_write_failing_after_its_rows_leaves_neither_rows_nor_a_span(store: Store) -> None:
    # The span's partition does not fit its INTEGER column: the rows are inserted first, then
    # recording the span fails, in the same transaction.
    table = rows(range(5))
    with pytest.raises(duckdb.Error):
        store.write_batch(table, pa.array(range(5), pa.int64()), OffsetSpan("t", 2**40, 0, 4))
    assert counts(store) == (0, 0)
    # Nothing of it counts as written: the same batch, sent again, goes in whole.
    assert write(store, range(5)).inserted == 5
    assert counts(store) == (5, 1)


def test_a_write_failing_on_its_rows_leaves_nothing_and_the_store_usable(store: Store) -> None:
    write(store, range(3))
    bad = rows(range(3, 6)).set_column(2, "value", pa.array(["1", "x", "3"]))
    with pytest.raises(duckdb.Error):
        store.write_batch(bad, pa.array(range(3, 6), pa.int64()), OffsetSpan("t", 0, 3, 5))
    assert counts(store) == (3, 1)
    assert store.resume_offset("t", 0, 0) == 3
    assert write(store, range(3, 6)).inserted == 3
    assert store.resume_offset("t", 0, 0) == 6


def test_concurrent_writes_land_exactly_once(store: Store) -> None:
    # 8 threads write 59 batches of one partition between them, each batch twice and half
    # of them overlapping their neighbours, in a shuffled order; plus a partition per thread.
    batches = [range(i * 10, i * 10 + 10) for i in range(30)]
    batches += [range(i * 10 + 5, i * 10 + 15) for i in range(29)]
    shuffled = batches * 2
    random.Random(0).shuffle(shuffled)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            for offsets in shuffled[seed::8]:
                write(store, offsets)
            for start in range(0, 50, 10):
                write(store, range(start, start + 10), partition=seed + 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    cur = store.cursor()
    repeated = cur.execute(
        "SELECT entity_id FROM features GROUP BY entity_id HAVING count(*) > 1"
    ).fetchall()
    assert repeated == []
    assert counts(store)[0] == 300 + 8 * 50
    assert store.resume_offset("t", 0, 0) == 300
    assert all(store.resume_offset("t", p, 0) == 50 for p in range(1, 9))
    # Write times never go back in commit order: the merger's watermark relies on it.
    created = cur.execute("SELECT DISTINCT created_at FROM features ORDER BY 1").fetchall()
    assert len(created) > 1
    merger.merge(store.cursor())
    assert stored(store) == brute_force(store)


def test_a_batch_of_dead_letters_only_records_its_span(store: Store) -> None:
    write(store, range(0, 3))
    # Offsets 3-7 were all dead letters: the batch carries no row, only its span.
    empty = write_batch.decode_batch(
        write_batch.encode(rows(range(0)).append_column("offset", pa.array([], pa.int64())))
    )
    span = OffsetSpan("t", 0, 3, 7)
    result, online = store.write_features(empty.rows, empty.offsets, span)
    assert (result.inserted, result.duplicates) == (0, 0)
    assert online.num_rows == 0
    assert store.resume_offset("t", 0, 0) == 8
    assert counts(store) == (3, 2)
    # Its updates for the online store are none, and redelivering it changes nothing.
    cur = store.cursor()
    cur.register("batch_rows", online)
    assert cur.sql(online_updates_sql("batch_rows")).fetchall() == []
    cur.unregister("batch_rows")
    assert store.write_batch(empty.rows, empty.offsets, span).inserted == 0
    assert write(store, range(8, 10)).inserted == 2
    assert store.resume_offset("t", 0, 0) == 10


class _PausingCursor:
    """A DuckDB cursor that runs `during` just before the merge's upsert, inside its
    transaction (a hook to interleave; DuckDB does all the work)."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, during: Any) -> None:
        self._cur = cur
        self._during = during

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == merger.MERGE_SQL and self._during is not None:
            self._during, during = None, self._during
            during()
        return self._cur.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def test_a_write_committing_while_a_merge_runs_is_merged_next(store: Store) -> None:
    rng = random.Random(21)
    first = random_batch(rng, 40)
    store.write_batch(first, pa.array(range(40), pa.int64()), OffsetSpan("m", 0, 0, 39))
    second = random_batch(rng, 40)

    def write_meanwhile() -> None:
        # Another thread, as the service's writes are: it commits before the merge does.
        thread = threading.Thread(
            target=store.write_batch,
            args=(second, pa.array(range(40, 80), pa.int64()), OffsetSpan("m", 0, 40, 79)),
        )
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive()

    merge_cursor = store.cursor().cursor()
    result = merger.merge(_PausingCursor(merge_cursor, write_meanwhile))  # type: ignore[arg-type]
    assert result.rows == 40  # the merge saw only what had committed when it began
    assert counts(store)[0] == 80
    written_at = store.cursor().execute("SELECT max(created_at) FROM features").fetchall()[0][0]
    assert merger.merged_through(store.cursor()) < written_at
    assert merger.merge(store.cursor()).rows == 40
    assert stored(store) == brute_force(store)
    assert merger.merge(store.cursor()).rows == 0
