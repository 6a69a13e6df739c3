"""The DuckDB store: schema, and the single writer's batched, exactly-once insert."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.logs import quoted
from featurestore.reads import result_format
from featurestore.reads.guard import check_read_only
from featurestore.reads.limits import UNBOUNDED, Deadline, ReadLimits
from featurestore.settings import Settings
from featurestore.sql import in_transaction
from featurestore.store import merger, reading, spans
from featurestore.store.memory import Memory
from featurestore.store.spans import OffsetSpan as OffsetSpan
from featurestore.store.spans import WriteResult as WriteResult
from featurestore.store.watchdog import Watchdog

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

# Store.read takes Arrow from an executed statement: for small results it costs less than
# the relation API that this warning recommends, and the same for large ones (README, Benchmarks).
ARROW_COPY_WARNING = "Arrow output on a DB-API result"
warnings.filterwarnings("ignore", message=ARROW_COPY_WARNING, category=UserWarning)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS features (
        entity_id TEXT, feature_name TEXT, value DOUBLE,
        event_timestamp TIMESTAMP, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    # An index on entity_id made an entity's history a fast read instead of a scan, but
    # cost memory and insert time on every row (README, Benchmarks). The latest values, the read
    # that needed it, come from latest_features (featurestore.store.merger) instead.
    "DROP INDEX IF EXISTS features_entity",
    # One row per committed write batch: the Kafka offsets it covered.
    """CREATE TABLE IF NOT EXISTS ingested_batches (
        topic TEXT NOT NULL, kafka_partition INTEGER NOT NULL,
        first_offset BIGINT NOT NULL, last_offset BIGINT NOT NULL,
        row_count BIGINT NOT NULL, duplicate_rows BIGINT NOT NULL,
        committed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    # The created_at its rows were given (null when it inserted none): a redelivered row's
    # online update carries its first write's (featurestore.store.online's tie rule).
    "ALTER TABLE ingested_batches ADD COLUMN IF NOT EXISTS created_at TIMESTAMP",
    """CREATE TABLE IF NOT EXISTS model_metadata (
        model_id TEXT NOT NULL, artifact_type TEXT NOT NULL, version TEXT NOT NULL,
        trained_date DATE, status TEXT NOT NULL, azure_location TEXT NOT NULL,
        expected_features STRUCT("index" INTEGER, name TEXT, type TEXT)[],
        registered_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        PRIMARY KEY (model_id, version, artifact_type))""",
    # One row per served prediction (featurestore.ingest.predictions), from the predictions
    # topic, exactly once like features (its offset spans in ingested_batches).
    """CREATE TABLE IF NOT EXISTS prediction_log (
        request_id TEXT NOT NULL, model_id TEXT NOT NULL, model_version TEXT NOT NULL,
        entity_id TEXT, served_at TIMESTAMP NOT NULL, source TEXT NOT NULL,
        features STRUCT(name TEXT, value DOUBLE, origin TEXT, event_timestamp TIMESTAMP)[],
        outputs STRUCT(name TEXT, "values" DOUBLE[], labels TEXT[])[],
        kafka_partition INTEGER NOT NULL, kafka_offset BIGINT NOT NULL,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    *merger.SCHEMA,
)


def _writes_first(
    write: Callable[Concatenate[Store, P], R],
) -> Callable[Concatenate[Store, P], R]:
    """A write that finds DuckDB's memory full stops every running read, then runs again.

    Reads are what fill that memory (a write batch needs a few MiB): under hostile reads a
    write failed with out-of-memory, and the bridge's retry delayed ingestion by seconds.
    """

    @functools.wraps(write)
    def first(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return write(store, *args, **kwargs)
        except duckdb.OutOfMemoryException:
            stopped = store._watchdog.stop_all("memory", wait_s=2.0)
            log.warning("write_out_of_memory reads_stopped=%d retry=1", stopped)
            return write(store, *args, **kwargs)

    return first


class Store:
    """Owner of the DuckDB file: one connection, a cursor per thread, writes serialised."""

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        *,
        memory: Memory | None = None,
        limits: ReadLimits | None = None,
        checkpoint_threshold_mib: int | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.memory = memory
        # In-process reads without limits of their own (the service passes its settings').
        self.limits = limits or UNBOUNDED
        self._con = duckdb.connect(str(path))
        # GLOBAL: every cursor is a session of its own. created_at defaults to
        # CURRENT_TIMESTAMP: keep it in UTC like event_timestamp; and a name in FROM must
        # never resolve to a Python variable of the worker.
        self._con.execute("SET GLOBAL TimeZone = 'UTC'")
        self._con.execute("SET GLOBAL python_enable_replacements = false")
        # A read naming a function of a known extension would otherwise download and load
        # it (a file written, then read); what the store uses (Parquet, JSON) is built in.
        self._con.execute("SET GLOBAL autoinstall_known_extensions = false")
        self._con.execute("SET GLOBAL autoload_known_extensions = false")
        if threads:
            self._con.execute(f"SET GLOBAL threads = {int(threads)}")
        if memory is not None:
            memory.apply(self._con)
        if checkpoint_threshold_mib:
            # A checkpoint holds latest reads while it rewrites latest_features (README,
            # reads under write load).
            threshold = int(checkpoint_threshold_mib)
            self._con.execute(f"SET GLOBAL checkpoint_threshold = '{threshold}MiB'")
        self._watchdog = Watchdog()
        self._write_lock = threading.Lock()
        self._local = threading.local()
        for statement in SCHEMA:
            self._con.execute(statement)
        newest = self._con.execute("SELECT max(created_at) FROM features").fetchall()[0][0]
        self._last_created_at: dt.datetime = newest or merger.BEGINNING
        log.info(
            "duckdb_open path=%s memory_limit_mib=%s temp_dir=%s",
            quoted(path),
            memory.limit_mib if memory else "default",
            quoted(memory.temp_dir) if memory else "default",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The service's store: its file, threads, memory and read limits from settings."""
        return cls(
            settings.duckdb_file,
            settings.duckdb_threads,
            memory=Memory.from_settings(settings),
            limits=ReadLimits.from_settings(settings),
            checkpoint_threshold_mib=settings.duckdb_checkpoint_threshold_mib,
        )

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shared across threads)."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def close(self) -> None:
        """Checkpoint and close the database file."""
        self._watchdog.stop()
        self._con.execute("CHECKPOINT")
        self._con.close()

    def write_batch(self, rows: pa.Table, offsets: pa.Array, span: OffsetSpan) -> WriteResult:
        """Insert rows and record their offset span in one transaction, skipping rows whose
        offsets an earlier batch already committed (a redelivered or resent batch).

        `offsets` gives each row's Kafka message offset; `span` covers every message the
        bridge consumed for this batch, including those sent to the dead-letter topic.
        """
        return self.write_features(rows, offsets, span)[0]

    @_writes_first
    def write_features(
        self, rows: pa.Table, offsets: pa.Array, span: OffsetSpan
    ) -> tuple[WriteResult, pa.Table]:
        """write_batch, also giving the rows with the created_at each has in DuckDB (a
        row already written keeps its first write's): the online store's updates."""
        with self.transaction() as cur:
            done = spans.covering(cur, span)
            fresh = rows.filter(pc.invert(spans.seen(offsets, done))) if done else rows
            earlier = spans.first_created_at(offsets, done)
            created_at = None
            if fresh.num_rows:
                created_at = self._created_at(cur)
                cur.register("incoming", fresh)
                cur.execute(
                    "INSERT INTO features "
                    "(entity_id, feature_name, value, event_timestamp, created_at) "
                    "SELECT entity_id, feature_name, value, event_timestamp, ? FROM incoming",
                    [created_at],
                )
                cur.unregister("incoming")
            result = spans.record_span(cur, span, rows.num_rows, fresh.num_rows, created_at)
        now = pa.scalar(created_at or self._last_created_at, pa.timestamp("us"))
        return result, rows.append_column("created_at", pc.fill_null(earlier, now))

    @_writes_first
    def write_predictions(
        self, records: pa.Table, offsets: pa.Array, span: OffsetSpan
    ) -> WriteResult:
        """Insert prediction records (featurestore.ingest.predictions) exactly once, as
        write_batch does feature rows: records of offsets already committed are skipped."""
        with self.transaction() as cur:
            fresh = spans.unwritten(
                cur, records.append_column("kafka_offset", offsets), offsets, span
            )
            if fresh.num_rows:
                cur.register("incoming", fresh)
                cur.execute(
                    "INSERT INTO prediction_log (request_id, model_id, model_version, entity_id, "
                    "served_at, source, features, outputs, kafka_partition, kafka_offset, "
                    "created_at) SELECT request_id, model_id, model_version, entity_id, "
                    "served_at, source, features, outputs, ?, kafka_offset, ? FROM incoming",
                    [span.partition, self._created_at(cur)],
                )
                cur.unregister("incoming")
            return spans.record_span(cur, span, records.num_rows, fresh.num_rows)

    def _created_at(self, cur: duckdb.DuckDBPyConnection) -> dt.datetime:
        # The transaction's start, never before an earlier write's even if the clock steps
        # back: the latest-values merger's watermark relies on it (featurestore.store.merger).
        now = cur.execute("SELECT CURRENT_TIMESTAMP::TIMESTAMP").fetchall()[0][0]
        self._last_created_at = max(now, self._last_created_at)
        return self._last_created_at

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction, serialised with every other write; rolled back on error."""
        with self._write_lock, in_transaction(self.cursor()) as cur:
            yield cur

    def read(
        self, sql: str, params: list[object] | dict[str, object] | None, *, guarded: bool = True
    ) -> pa.Table:
        """Run one parameterised SELECT on this thread's cursor; the result as Arrow (for
        callers inside this process; the read tasks use read_result)."""
        return result_format.to_table(self.read_result(sql, params, guarded=guarded))

    def read_result(
        self,
        sql: str,
        params: list[object] | dict[str, object] | None,
        *,
        guarded: bool = True,
        max_rows: int = result_format.MAX_ROWS,
        deadline: Deadline | None = None,
        limits: ReadLimits | None = None,
    ) -> result_format.Result:
        """Run one parameterised SELECT on this thread's cursor (never blocked by a write):
        up to max_rows rows of simple types as rows, any other result as Arrow
        (featurestore.reads.result_format).

        Interrupted inside DuckDB when the deadline passes (QueryTimeoutError); a result
        past the limits' rows or bytes, or a read past DuckDB's memory limit, fails with
        ReadLimitError. guarded=False only for statements built here from ones that passed
        the guard.
        """
        if guarded:
            check_read_only(sql)
        if deadline is not None and deadline.passed():
            raise deadline.error()
        cur = self.cursor()
        watch = None if deadline is None else self._watchdog.watch(cur, deadline.at)
        try:
            return reading.run(
                cur, sql, params, as_rows_up_to=max_rows, limits=limits or self.limits
            )
        except (duckdb.Error, OSError) as exc:  # OSError: DuckDB's error inside an Arrow stream
            if watch is not None and watch.reason == "memory":
                raise reading.stopped_for_a_write(self.memory) from None
            if deadline is not None and watch is not None and watch.fired:
                raise deadline.error() from None
            raise reading.query_error(exc, self.memory) from None
        finally:
            if watch is not None:
                self._watchdog.release(watch)

    def resume_offset(self, topic: str, partition: int, committed: int) -> int:
        """First offset not yet written, walking recorded ranges contiguous from `committed`."""
        return spans.resume_position(self.cursor(), topic, partition, committed)
