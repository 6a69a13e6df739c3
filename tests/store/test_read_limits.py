"""Each bound of a read, enforced in the Store itself: the deadline (interrupted inside DuckDB,
the thread free again), rows and bytes counted while fetching, DuckDB's memory limit and
temp folder (DuckDB only, no services)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import duckdb
import psutil
import pyarrow as pa
import pytest

from featurestore.errors import QueryError, QueryTimeoutError, ReadLimitError
from featurestore.reads import result_format
from featurestore.reads.groups import GroupedReads
from featurestore.reads.limits import Deadline, ReadLimits
from featurestore.settings import Settings
from featurestore.store.database import OffsetSpan, Store
from featurestore.store.memory import Memory
from tests.helpers import wait_until

ENDLESS = "SELECT count(*) FROM range(100000000000)"  # hours of work for DuckDB
ENDLESS_ROWS = "SELECT i, 'row ' || i AS s FROM range(100000000000) t(i)"
# 200 rows at once, then one row a second or so: a read in two statements (rows, then Arrow).
SLOW_AFTER_ROWS = "SELECT i FROM range(100000000000) t(i) WHERE i < 200 OR i % 1000000000 = 1"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(
        tmp_path / "features.duckdb",
        threads=1,
        memory=Memory(limit_mib=128, temp_dir=tmp_path / "spill", max_temp_mib=256),
        limits=ReadLimits(seconds=30.0, max_rows=1000, max_bytes=64 * 1024),
    )


def select_one(store: Store) -> list[tuple[object, ...]]:
    result = store.read_result("SELECT 1 AS one", None, deadline=Deadline.for_read(None, 5.0))
    assert isinstance(result, result_format.Rows)
    return result.rows


def test_a_read_past_its_time_limit_is_stopped_inside_duckdb(store: Store) -> None:
    deadline = Deadline.for_read(None, 0.5)
    with pytest.raises(
        QueryTimeoutError, match=r"time limit of 0\.5 s \(FSTORE_READ_TIME_LIMIT_S\)"
    ):
        store.read_result(ENDLESS, None, deadline=deadline)
    # Stopped, not abandoned: the same thread's cursor answers at once, and no CPU stays
    # held (the query would keep a core busy for hours).
    assert select_one(store) == [(1,)]
    cpu_after_error = psutil.Process().cpu_times()
    time.sleep(1.0)
    cpu_later = psutil.Process().cpu_times()
    busy = (cpu_later.user + cpu_later.system) - (cpu_after_error.user + cpu_after_error.system)
    assert busy < 0.5, f"{busy:.2f} s of CPU in the second after the interrupt"


def test_a_read_stopped_between_its_statements_is_still_stopped(store: Store) -> None:
    # Deadlines that pass as the read starts: the interrupt often lands before DuckDB runs
    # the statement, which clears it; the watchdog interrupts again until the read ends.
    # SLOW_AFTER_ROWS runs two statements (rows first, then an Arrow stream) and a window
    # between them; ENDLESS one.
    for sql in [ENDLESS, SLOW_AFTER_ROWS] * 10:
        errors: list[BaseException] = []

        def read(sql: str = sql, errors: list[BaseException] = errors) -> None:
            try:
                store.read_result(sql, None, deadline=Deadline.for_read(None, 0.002))
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), f"{sql} ran on past its deadline"
        [error] = errors
        assert isinstance(error, QueryTimeoutError | ReadLimitError), error


def test_the_callers_deadline_stops_the_read_when_it_comes_first(store: Store) -> None:
    deadline = Deadline.for_read(time.time() + 0.3, limit_s=30.0)
    with pytest.raises(QueryTimeoutError, match="at its caller's deadline"):
        store.read_result(ENDLESS, None, deadline=deadline)
    assert select_one(store) == [(1,)]


def test_a_read_whose_deadline_passed_in_the_queue_never_runs(store: Store) -> None:
    deadline = Deadline.for_read(time.time() - 2.0, limit_s=30.0)
    with pytest.raises(QueryTimeoutError, match="passed before the DuckDB service started it"):
        store.read_result("SELECT 1", None, deadline=deadline)


def test_reads_on_many_threads_each_stopped_at_their_own_deadline(store: Store) -> None:
    errors: dict[int, BaseException] = {}

    def endless(index: int) -> None:
        try:
            store.read_result(ENDLESS, None, deadline=Deadline.for_read(None, 0.2 + index / 10))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors[index] = exc

    threads = [threading.Thread(target=endless, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    fast = store.read_result("SELECT 42 AS x", None, deadline=Deadline.for_read(None, 30.0))
    for thread in threads:
        thread.join(timeout=30)
    assert isinstance(fast, result_format.Rows) and fast.rows == [(42,)]
    assert sorted(errors) == [0, 1, 2, 3]
    assert all(isinstance(error, QueryTimeoutError) for error in errors.values())


def test_a_finished_read_is_never_interrupted_later(store: Store) -> None:
    # Reads that end before their deadline leave the watchdog: a longer read on the same
    # cursor, still running when those deadlines pass, is not stopped by them.
    for _ in range(50):
        store.read_result("SELECT 1", None, deadline=Deadline.for_read(None, 0.2))
    counted = store.read_result(
        "SELECT count(*) AS n FROM range(400000000) t(i) WHERE i % 7 = 3",  # about a second
        None,
        deadline=Deadline.for_read(None, 120),
    )
    assert isinstance(counted, result_format.Rows) and counted.rows == [(57_142_857,)]


def test_a_result_past_the_row_limit_fails_while_fetching(store: Store) -> None:
    # 1e11 rows: built whole, this result would never finish (nor fit anywhere).
    with pytest.raises(ReadLimitError, match=r"more than 1,000 rows.*FSTORE_READ_MAX_ROWS"):
        store.read_result(ENDLESS_ROWS, None)
    with pytest.raises(ReadLimitError, match="more than 1,000 rows"):
        store.read_result("SELECT [i] AS l FROM range(100000000000) t(i)", None)
    exact = store.read_result("SELECT i FROM range(1000) t(i)", None)
    assert result_format.to_table(exact).num_rows == 1000


def test_the_row_limit_holds_for_small_results_as_rows(tmp_path: Path) -> None:
    store = Store(
        tmp_path / "f.duckdb", limits=ReadLimits(seconds=30.0, max_rows=10, max_bytes=1 << 20)
    )
    with pytest.raises(ReadLimitError, match="more than 10 rows"):
        store.read_result("SELECT i FROM range(50) t(i)", None)
    assert isinstance(store.read_result("SELECT i FROM range(10) t(i)", None), result_format.Rows)


def test_a_result_past_the_byte_limit_fails_while_fetching(store: Store) -> None:
    with pytest.raises(ReadLimitError, match=r"larger than 65,536 bytes.*FSTORE_READ_MAX_BYTES"):
        store.read_result("SELECT repeat('x', 1000) AS s FROM range(900) t(i)", None)


def test_the_encoded_result_is_measured_before_it_is_sent(store: Store) -> None:
    # 50 rows of 2 KB travel as rows (no Arrow batches to count): the bytes are checked
    # on the encoded result, which is then not sent.
    reads = GroupedReads(
        store.read_result, limits=ReadLimits(seconds=30.0, max_rows=1000, max_bytes=64 * 1024)
    )
    big, small = reads.run(
        [
            ("SELECT repeat('y', 2000) AS s FROM range(50)", None),
            ("SELECT repeat('y', 20) AS s FROM range(50)", None),
        ]
    )
    assert isinstance(big, tuple) and big[0] == "ReadLimitError"
    assert "FSTORE_READ_MAX_BYTES" in big[1]
    assert isinstance(small, bytes)
    assert result_format.decode_table(small).num_rows == 50


def test_a_group_past_its_deadline_fails_each_read_without_running_them_again(
    store: Store,
) -> None:
    calls: list[str] = []

    def read(sql: str, params: object, **kwargs: object) -> result_format.Result:
        calls.append(sql)
        return store.read_result(sql, params, **kwargs)  # type: ignore[arg-type]

    sql = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i > ?"
    reads = GroupedReads(read, limits=ReadLimits(30.0, 1000, 1 << 20))
    reads._names[sql] = ["n"]  # known: the reads go as one group
    soon = time.time() + 0.5
    outcomes = reads.run([(sql, [1], soon), (sql, [2], soon), (sql, [3], soon)])
    assert [outcome[0] for outcome in outcomes] == ["QueryTimeoutError"] * 3
    assert len(calls) == 1  # the group ran once; no read ran again alone after the deadline


def test_a_read_over_duckdbs_memory_limit_fails_naming_it(tmp_path: Path) -> None:
    store = Store(
        tmp_path / "f.duckdb",
        threads=1,
        memory=Memory(limit_mib=64, temp_dir=tmp_path / "spill", max_temp_mib=0),
    )
    settings = store.read(
        "SELECT current_setting('memory_limit') AS m, current_setting('temp_directory') AS t",
        None,
    ).to_pylist()
    assert settings == [{"m": "64.0 MiB", "t": str(tmp_path / "spill")}]
    with pytest.raises(ReadLimitError, match=r"\(64 MiB, FSTORE_DUCKDB_MEMORY_LIMIT_MIB"):
        store.read("SELECT list(i) AS l FROM range(50000000) t(i)", None)
    assert store.read("SELECT 1 AS one", None).column("one").to_pylist() == [1]


def test_a_sort_past_the_memory_limit_spills_to_the_temp_folder(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    sql = "SELECT i FROM range(6000000) t(i) ORDER BY hash(i) OFFSET 5999999"
    without = Store(tmp_path / "a.duckdb", threads=1, memory=Memory(64, spill, max_temp_mib=0))
    with pytest.raises(ReadLimitError, match="memory"):
        without.read(sql, None)
    with_spill = Store(
        tmp_path / "b.duckdb", threads=1, memory=Memory(64, spill, max_temp_mib=1024)
    )
    assert with_spill.read(sql, None).num_rows == 1


def test_the_service_store_takes_memory_and_limits_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        duckdb_memory_limit_mib=96,
        duckdb_max_temp_mib=512,
        read_max_rows=7,
        read_max_bytes=4096,
        read_time_limit_s=2.5,
    )
    store = Store.from_settings(settings)
    found = store.read(
        "SELECT current_setting('memory_limit') AS m, current_setting('temp_directory') AS t, "
        "current_setting('max_temp_directory_size') AS x",
        None,
    ).to_pylist()
    assert found == [
        {"m": "96.0 MiB", "t": str(tmp_path / "data" / "duckdb-tmp"), "x": "512.0 MiB"}
    ]
    assert store.limits == ReadLimits(seconds=2.5, max_rows=7, max_bytes=4096)
    with pytest.raises(QueryError, match="more than 7 rows"):
        store.read("SELECT * FROM range(8)", None)


class _MemoryFullOnce(Store):
    """A store whose next write finds DuckDB's memory full once (as reads filling it made
    it in the hostile-read test), inside its transaction."""

    full = True

    def _created_at(self, cur: duckdb.DuckDBPyConnection) -> dt.datetime:
        if self.full:
            self.full = False
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
        return super()._created_at(cur)


def test_a_write_that_finds_memory_full_stops_the_reads_and_goes_through(tmp_path: Path) -> None:
    store = _MemoryFullOnce(tmp_path / "f.duckdb", threads=1, memory=Memory(128, tmp_path, 0))
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            store.read_result(ENDLESS, None, deadline=Deadline.for_read(None, 120))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    reading = threading.Thread(target=reader)
    reading.start()
    assert wait_until(lambda: store._watchdog._running == 1, timeout=10)
    rows = pa.table(
        {
            "entity_id": ["e1", "e2"],
            "feature_name": ["f", "f"],
            "value": [1.0, 2.0],
            "event_timestamp": pa.array([dt.datetime(2024, 1, 1)] * 2, pa.timestamp("us")),
        }
    )
    result = store.write_batch(rows, pa.array([0, 1], pa.int64()), OffsetSpan("t", 0, 0, 1))
    reading.join(timeout=30)
    assert (result.inserted, result.duplicates) == (2, 0)
    assert store.read("SELECT count(*) AS n FROM features", None).column("n").to_pylist() == [2]
    [error] = errors
    assert isinstance(error, ReadLimitError)
    assert "for a write" in str(error) and "FSTORE_DUCKDB_MEMORY_LIMIT_MIB" in str(error)
