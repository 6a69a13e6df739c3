"""Reads through the DuckDB service: typed results, errors, timeouts, refusals, and reads
that go on while a large write runs."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pytest
import redis
from pydantic import BaseModel

from featurestore import constants
from featurestore.errors import QueryError, QueryTimeoutError, ReadOnlyError
from featurestore.ingest import write_batch
from featurestore.reads.features import latest_features
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import CeleryReader, query, query_table
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


@dataclass
class FeatureRow:
    entity_id: str
    feature_name: str
    value: float
    event_timestamp: dt.datetime
    created_at: dt.datetime


class Count(BaseModel):
    n: int


def write_rows(settings: Settings, tag: str, n: int, offset_base: int) -> pa.Table:
    """Send one write task directly (the bridge's path, without Kafka)."""
    table = pa.table(
        {
            "entity_id": [f"{tag}{i % 1000}" for i in range(n)],
            "feature_name": [f"f{i % 7}" for i in range(n)],
            "value": [i / 4 for i in range(n)],
            "event_timestamp": pa.array(
                [dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(n)],
                pa.timestamp("us"),
            ),
            "offset": pa.array([offset_base + i // 1000 for i in range(n)], pa.int64()),
        }
    )
    return table


def send_write(settings: Settings, table: pa.Table, topic: str) -> object:
    offsets = table.column("offset")
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    return configure(settings).send_task(
        constants.TASK_WRITE_BATCH,
        args=[write_batch.encode(table), topic, 0, first, last],
        queue=settings.write_queue,
    )


def test_rows_map_into_dataclasses_with_every_column_type(stack: Settings) -> None:
    app = configure(stack)
    tag = f"q{uuid.uuid4().hex[:6]}_"
    send_write(stack, write_rows(stack, tag, 10, 0), f"reads-{tag}").get(timeout=60)  # type: ignore[attr-defined]
    rows = query(
        app,
        "SELECT entity_id, feature_name, value, event_timestamp, created_at FROM features "
        "WHERE starts_with(entity_id, ?) ORDER BY event_timestamp",
        [tag],
        FeatureRow,
        timeout=30,
    )
    assert len(rows) == 10
    first = rows[0]
    assert isinstance(first, FeatureRow)
    assert (first.entity_id, first.feature_name, first.value) == (f"{tag}0", "f0", 0.0)
    assert first.event_timestamp == dt.datetime(2024, 1, 1)
    assert isinstance(first.created_at, dt.datetime)
    assert abs(first.created_at - dt.datetime.now(dt.UTC).replace(tzinfo=None)) < dt.timedelta(
        minutes=5
    )
    [count] = query(
        app,
        "SELECT count(*) AS n FROM features WHERE starts_with(entity_id, ?)",
        [tag],
        Count,
        timeout=30,
    )
    assert count.n == 10


def test_empty_result_is_an_empty_list(stack: Settings) -> None:
    rows = query(
        configure(stack),
        "SELECT entity_id, feature_name, value, event_timestamp, "
        "created_at FROM features WHERE entity_id = ?",
        ["nobody"],
        FeatureRow,
    )
    assert rows == []


def test_database_error_carries_duckdbs_message(stack: Settings) -> None:
    with pytest.raises(QueryError, match="Table with name no_such_table does not exist"):
        query_table(configure(stack), "SELECT * FROM no_such_table")
    with pytest.raises(QueryError, match="Binder Error"):
        query_table(configure(stack), "SELECT no_such_column FROM features")


def test_timeout_says_the_service_did_not_answer(stack: Settings) -> None:
    slow = "SELECT count(*) FROM range(400000000) t(i) WHERE i % 7 = 3"  # about a second
    # The caller stops waiting at its timeout, and the service stops the read at the same
    # deadline: whichever comes first gives the error.
    with pytest.raises(
        QueryTimeoutError,
        match=r"DuckDB service did not answer within 0\.1s|at its caller's deadline",
    ):
        query_table(configure(stack), slow, timeout=0.1)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSERT INTO features (entity_id) VALUES ('x')", "got INSERT"),
        ("UPDATE features SET value = 0", "got UPDATE"),
        ("DELETE FROM features", "got DELETE"),
        ("CREATE TABLE t (a INT)", "got CREATE"),
        ("DROP TABLE features", "got DROP"),
        ("ALTER TABLE features ADD COLUMN x INT", "got ALTER"),
        ("ATTACH '/tmp/other.duckdb' AS other", "got ATTACH"),
        ("COPY features TO '/tmp/leak.csv'", "got COPY"),
        ("INSTALL httpfs", "got LOAD"),
        ("LOAD httpfs", "got LOAD"),
        ("SET threads = 1", "got SET"),
        ("PRAGMA enable_profiling", "got PRAGMA"),
        ("EXPORT DATABASE '/tmp/export'", "got EXPORT"),
        ("EXPLAIN ANALYZE DELETE FROM features", "got EXPLAIN"),
        ("SELECT 1; SELECT 2", "exactly one statement, got 2"),
        ("SELECT * FROM read_csv('/etc/passwd')", r"read_csv\(\) is not allowed"),
        ("SELECT * FROM read_parquet('/tmp/x.parquet')", r"read_parquet\(\) is not allowed"),
        ("SELECT * FROM glob('/etc/*')", r"glob\(\) is not allowed"),
        ("SELECT * FROM query('DELETE FROM features')", r"query\(\) is not allowed"),
        ("SELECT * FROM '/etc/passwd.csv'", "not a table of the database's main schema"),
        ('SELECT * FROM "/etc/passwd"."csv"', "not a table of the database's main schema"),
        ("SELECT * FROM pg_catalog.pg_settings", "not a table of the database's main schema"),
        ('SELECT * FROM (SUMMARIZE "/etc/passwd".csv)', "SUMMARIZE and SHOW are not allowed"),
        ("SELECT * FROM (DESCRIBE features)", "SUMMARIZE and SHOW are not allowed"),
    ],
)
def test_read_path_refuses(stack: Settings, sql: str, reason: str) -> None:
    app = configure(stack)
    before = query_table(app, "SELECT count(*) AS n FROM features").column("n")[0].as_py()
    with pytest.raises(ReadOnlyError, match=reason):
        query_table(app, sql)
    after = query_table(app, "SELECT count(*) AS n FROM features").column("n")[0].as_py()
    assert after == before


def test_parameter_holding_sql_is_stored_and_read_back_as_text(stack: Settings) -> None:
    app = configure(stack)
    tricky = f"x{uuid.uuid4().hex[:6]}'); DROP TABLE features; --"
    table = write_rows(stack, "", 1, 0).set_column(0, "entity_id", pa.array([tricky]))
    send_write(stack, table, f"reads-{uuid.uuid4().hex}").get(timeout=60)  # type: ignore[attr-defined]
    found = query_table(app, "SELECT entity_id FROM features WHERE entity_id = ?", [tricky])
    assert found.column("entity_id").to_pylist() == [tricky]
    assert query_table(app, "SELECT count(*) AS n FROM features").column("n")[0].as_py() > 0


def test_fifty_reads_are_answered_while_a_large_write_runs(stack: Settings) -> None:
    # Whether they finish before the write is a wall-clock matter: bench/reads_during_write.py.
    app = configure(stack)
    tag = f"w{uuid.uuid4().hex[:6]}_"
    big = write_rows(stack, tag, 1_500_000, 0)
    queue = redis.Redis.from_url(stack.redis_url)
    pending = send_write(stack, big, f"reads-{tag}")
    assert wait_until(lambda: queue.llen(stack.write_queue) == 0, timeout=60)  # taken

    def one_read(i: int) -> int:
        table = query_table(
            app,
            "SELECT count(*) AS n FROM features WHERE entity_id = ?",
            [f"nobody{i}"],
            timeout=60,
        )
        return int(table.column("n")[0].as_py())

    with ThreadPoolExecutor(50) as pool:
        assert list(pool.map(one_read, range(50))) == [0] * 50
    assert pending.get(timeout=300) == {"inserted": 1_500_000, "duplicates": 0}  # type: ignore[attr-defined]


def test_latest_features_of_an_entity(stack: Settings) -> None:
    app = configure(stack)
    tag = f"l{uuid.uuid4().hex[:6]}_"
    t0 = dt.datetime(2024, 2, 1)
    table = pa.table(
        {
            "entity_id": [f"{tag}a"] * 5 + [f"{tag}b"],
            "feature_name": ["f0", "f0", "f1", "f1", "f1", "f0"],
            "value": [1.0, 2.0, 5.0, 7.0, 6.0, 9.0],
            "event_timestamp": pa.array(
                [
                    t0,
                    t0 + dt.timedelta(hours=1),
                    t0,
                    t0 + dt.timedelta(hours=2),
                    t0 + dt.timedelta(hours=2),
                    t0,
                ],
                pa.timestamp("us"),
            ),
            "offset": pa.array([0, 0, 0, 0, 0, 1], pa.int64()),
        }
    )
    send_write(stack, table, f"latest-{tag}").get(timeout=60)  # type: ignore[attr-defined]
    # The latest-values table follows the writes within a merge interval.
    assert wait_until(lambda: len(latest_features(CeleryReader(app), f"{tag}a")) == 2, timeout=30)
    latest = latest_features(CeleryReader(app), f"{tag}a")
    # f1 has a tie at t0+2h: the largest value wins within one batch
    assert [(f.feature_name, f.value, f.event_timestamp) for f in latest] == [
        ("f0", 2.0, t0 + dt.timedelta(hours=1)),
        ("f1", 7.0, t0 + dt.timedelta(hours=2)),
    ]
    assert latest_features(CeleryReader(app), f"{tag}nobody") == []

    # A later write of an older event leaves the value; a newer event replaces it.
    later = pa.table(
        {
            "entity_id": [f"{tag}a", f"{tag}a"],
            "feature_name": ["f0", "f1"],
            "value": [-1.0, 42.0],
            "event_timestamp": pa.array([t0, t0 + dt.timedelta(hours=3)], pa.timestamp("us")),
            "offset": pa.array([0, 0], pa.int64()),
        }
    )
    send_write(stack, later, f"latest2-{tag}").get(timeout=60)  # type: ignore[attr-defined]
    assert wait_until(
        lambda: [f.value for f in latest_features(CeleryReader(app), f"{tag}a")] == [2.0, 42.0],
        timeout=30,
    )
