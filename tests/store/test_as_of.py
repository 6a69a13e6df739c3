"""Training sets built in one and in several parts, on one and two DuckDB threads,
in-process on a DuckDB of their own, against the brute force of
tests/tasks/test_training_set.py (no services needed)."""

from __future__ import annotations

import datetime as dt
import logging
import random
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.store import as_of, training
from tests.tasks.test_training_set import (
    BASE,
    FEATURES,
    MAX_AGE,
    brute_force,
    complete_events,
    sparse_events,
)

COLUMNS = ("entity_id", "feature_name", "value", "event_timestamp", "created_at")


def history(lines: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    """The features table holding the lines, written in batches of 100 (one created_at
    each, as a write batch gets), so that ties share a created_at or not."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE features (entity_id TEXT, feature_name TEXT, value DOUBLE, "
        "event_timestamp TIMESTAMP, created_at TIMESTAMP)"
    )
    rows = [
        (
            e["entity_id"],
            e["feature_name"],
            float(e["value"]),
            dt.datetime.fromisoformat(e["event_timestamp"]),
            BASE + dt.timedelta(seconds=i // 100),
        )
        for i, e in enumerate(lines)
    ]
    con.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?)", rows)
    return con


@pytest.mark.parametrize("make_events", [sparse_events, complete_events])
@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("duckdb_threads", [1, 2])  # 2: as the service builds one (job_threads)
def test_every_part_count_matches_brute_force(
    tmp_path: Path, make_events: Any, parts: int, duckdb_threads: int, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger=as_of.__name__)
    check_against_brute_force(tmp_path, make_events, parts, duckdb_threads)
    assert "training_key_shared" not in caplog.text  # joined on the hash alone


@pytest.mark.parametrize("make_events", [sparse_events, complete_events])
def test_entities_sharing_the_join_key_are_joined_again_on_their_text(
    tmp_path: Path, make_events: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger=as_of.__name__)
    monkeypatch.setattr(as_of, "KEY", "hash(entity_id) % 2")  # 25 entities on two keys
    check_against_brute_force(tmp_path, make_events, 1, 1)
    assert "training_key_shared" in caplog.text


def check_against_brute_force(
    tmp_path: Path, make_events: Any, parts: int, duckdb_threads: int
) -> None:
    """A training set of 300 spine rows over 25 entities, equal to the brute force's."""
    rng = random.Random(3)
    entities = [f"e{i}" for i in range(25)]
    con = history(make_events(rng, entities))
    con.execute(f"SET GLOBAL threads = {duckdb_threads}")
    stored = [
        dict(zip(COLUMNS, r, strict=True)) for r in con.execute("SELECT * FROM features").fetchall()
    ]
    spine_rows = [
        (rng.choice(entities), BASE + dt.timedelta(minutes=rng.randrange(-30, 700, 5)))
        for _ in range(300)
    ]
    spine = tmp_path / "spine.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": [e for e, _t in spine_rows],
                "timestamp": pa.array([t for _e, t in spine_rows], pa.timestamp("us")),
            }
        ),
        spine,
    )
    output = tmp_path / "out.parquet"
    report = training.build(
        con.cursor(), training.TrainingRequest(spine, FEATURES, output, MAX_AGE), parts=parts
    )
    result = pq.read_table(output).to_pylist()
    assert report.rows == len(result) == len(spine_rows)
    assert [(r["entity_id"], r["timestamp"]) for r in result] == spine_rows
    mismatches = [
        (row["entity_id"], row["timestamp"], f, row[f])
        for row in result
        for f in FEATURES
        if row[f] != brute_force(stored, row["entity_id"], row["timestamp"], f)
    ]
    assert mismatches == []
    # Each part's temp tables went with its transaction; the cursor's own are dropped.
    left = con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    assert left == []
