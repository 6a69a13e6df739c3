"""The latest-values table: the newest value of every (entity, feature), kept off the write
path by a merger thread of the DuckDB service.

Reading an entity's events from `features` costs a fetch per stored row (each row is fetched
from its own row group), so that read slows down as an entity's history grows. Here an
entity has one row per feature. Folding rows in as they are written, inside the write
transaction, took a large share of the ingest budget in DuckDB's upsert (README, Benchmarks); the
merger folds every new row in one upsert per interval instead, after the writes have
committed.

What the merger has folded in is recorded in `latest_state` in the same transaction as the
upsert, so a restart (or a kill) resumes where the last merge committed. Its watermark is
the newest `created_at` merged: writes are serialised and the store never gives a write a
`created_at` before an earlier write's (Store._created_at), so rows a merge has not seen are
at or past the watermark. Rows at the watermark itself are merged again when more of them
have come (harmless: the newest row wins whatever the order).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from featurestore import metrics
from featurestore.priority import lower_thread_priority
from featurestore.sql import in_transaction

log = logging.getLogger(__name__)

SCHEMA = (
    # Uncompressed: a read fetches an entity's rows one by one, and each fetch from a
    # compressed segment decodes a vector of it, so reads were slower compressed; the table
    # is larger (README, Benchmarks).
    """CREATE TABLE IF NOT EXISTS latest_features (
        entity_id TEXT NOT NULL USING COMPRESSION uncompressed,
        feature_name TEXT NOT NULL USING COMPRESSION uncompressed,
        value DOUBLE USING COMPRESSION uncompressed,
        event_timestamp TIMESTAMP USING COMPRESSION uncompressed,
        created_at TIMESTAMP USING COMPRESSION uncompressed,
        PRIMARY KEY (entity_id, feature_name))""",
    # The primary key's index serves only whole-key lookups; reads ask by entity.
    "CREATE INDEX IF NOT EXISTS latest_features_entity ON latest_features (entity_id)",
    """CREATE TABLE IF NOT EXISTS latest_state (
        id INTEGER PRIMARY KEY, merged_through TIMESTAMP NOT NULL,
        rows_at_watermark BIGINT NOT NULL)""",
)

# The newest row wins: by event_timestamp, then the row written last, then the largest value
# (the same rule as the online store and the training sets).
NEWEST = "(event_timestamp, created_at, value)"

MERGE_SQL = f"""
    INSERT INTO latest_features (entity_id, feature_name, value, event_timestamp, created_at)
    SELECT entity_id, feature_name, newest.value, newest.event_timestamp, newest.created_at
    FROM (
        SELECT entity_id, feature_name,
               arg_max({{'value': value, 'event_timestamp': event_timestamp,
                         'created_at': created_at}}, {NEWEST}) AS newest
        FROM features
        WHERE created_at BETWEEN $since AND $through
        GROUP BY entity_id, feature_name)
    ON CONFLICT (entity_id, feature_name) DO UPDATE SET
        value = excluded.value,
        event_timestamp = excluded.event_timestamp,
        created_at = excluded.created_at
    WHERE (excluded.event_timestamp, excluded.created_at, excluded.value)
        > (latest_features.event_timestamp, latest_features.created_at, latest_features.value)
"""


# Rows folded in per merge at most: a merge's memory grows with its rows, and a merger that
# falls behind catches up in steps. In `make bench-ingest` smaller steps lowered the
# worker's peak and left the table no further behind at the end (README, Benchmarks).
MAX_ROWS = 50_000

# Before the first merge (and the first write): every row is new.
BEGINNING = dt.datetime(1, 1, 1)


def merged_through(cur: duckdb.DuckDBPyConnection) -> dt.datetime:
    """The watermark: `created_at` of the newest row already merged."""
    return _state(cur)[0]


def _state(cur: duckdb.DuckDBPyConnection) -> tuple[dt.datetime, int]:
    rows = cur.execute(
        "SELECT merged_through, rows_at_watermark FROM latest_state WHERE id = 1"
    ).fetchall()
    return (rows[0][0], rows[0][1]) if rows else (BEGINNING, 0)


@dataclass(frozen=True)
class MergeResult:
    """What one merge did: feature rows folded in, (entity, feature) pairs inserted or
    changed, the new watermark, and whether written rows remain to merge."""

    rows: int
    pairs_changed: int
    through: dt.datetime
    more: bool


def merge(cur: duckdb.DuckDBPyConnection, max_rows: int = MAX_ROWS) -> MergeResult:
    """Fold the rows written since the watermark into latest_features, in one transaction:
    whole writes, oldest first, up to max_rows (at least one write, however large)."""
    with in_transaction(cur):
        since, seen_at_since = _state(cur)
        writes = cur.execute(
            "SELECT created_at, count(*) FROM features WHERE created_at >= ? "
            "GROUP BY created_at ORDER BY created_at",
            [since],
        ).fetchall()
        # Two writes can share a created_at (clock resolution): rows at the watermark are
        # new when there are more of them than the last merge saw.
        if writes and writes[0] == (since, seen_at_since):
            writes = writes[1:]
        if not writes:
            return MergeResult(0, 0, since, more=False)
        taken = 0
        for index, (created_at, rows) in enumerate(writes):
            if index and taken + rows > max_rows:
                break
            taken += rows
            through, at_through = created_at, rows
        changed = cur.execute(MERGE_SQL, {"since": since, "through": through}).fetchall()[0][0]
        cur.execute("INSERT OR REPLACE INTO latest_state VALUES (1, ?, ?)", [through, at_through])
    return MergeResult(taken, int(changed), through, more=through != writes[-1][0])


class Merger:
    """A thread that merges new rows into latest_features after writes commit."""

    def __init__(
        self, cursor: Callable[[], duckdb.DuckDBPyConnection], interval_s: float, nice: int = 0
    ) -> None:
        self._cursor = cursor
        self._interval_s = interval_s
        self._nice = nice
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        # Writes noted, and how many of them the last successful merge covered; the first
        # merge catches up with whatever was written before start-up.
        self._noted = 1
        self._merged = 0
        self._oldest_unmerged: float | None = time.monotonic()
        metrics.LATEST_LAG_SECONDS.set_function(self.lag_seconds)
        self._thread = threading.Thread(target=self._run, name="latest-merger", daemon=True)

    def start(self) -> None:
        """Start merging (the first merge catches up with rows written before start-up)."""
        self._thread.start()

    def written(self) -> None:
        """Note that a write committed: the next merge picks it up."""
        with self._done:
            self._noted += 1
            if self._oldest_unmerged is None:
                self._oldest_unmerged = time.monotonic()
        self._wake.set()

    def lag_seconds(self) -> float:
        """How long the oldest write not yet merged has waited (0 when all are merged)."""
        with self._done:
            oldest = self._oldest_unmerged
        return 0.0 if oldest is None else time.monotonic() - oldest

    def wait_merged(self, timeout: float) -> bool:
        """Block until every write noted so far is merged; False on timeout."""
        with self._done:
            target = self._noted
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._merged >= target, timeout)

    def stop(self) -> None:
        """Stop after the merge under way, if any."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        # The merge runs in DuckDB without the GIL, so a lower priority cannot hold a read
        # behind it there; on a contended core the reads go first (README, reads under
        # write load).
        lower_thread_priority(self._nice)
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._done:
                covers = self._noted
                since = time.monotonic()
            try:
                more = self._merge_once()
            except Exception:  # retried after the interval; logged and counted
                metrics.FAILURES.labels("duckdb_worker", "latest_merge").inc()
                log.exception("latest_merge_failed")
                self._wake.set()
            else:
                if more:  # behind: the next step at once
                    self._wake.set()
                    continue
                with self._done:
                    self._merged = covers
                    if self._noted == covers:
                        self._oldest_unmerged = None
                    else:  # writes noted during the merge: the oldest of them is newer
                        self._oldest_unmerged = since
                    self._done.notify_all()
            # Gathers an interval's writes into one upsert, whose cost per row falls as it
            # grows (README, Benchmarks).
            self._stop.wait(self._interval_s)

    def _merge_once(self) -> bool:
        """One merge; True when rows remain to merge."""
        began = time.perf_counter()
        cpu_began = time.thread_time()
        result = merge(self._cursor())
        if not result.rows:
            return False
        elapsed = time.perf_counter() - began
        metrics.LATEST_MERGE_SECONDS.observe(elapsed)
        log.info(
            "latest_merge rows=%d pairs_changed=%d through=%s more=%s cpu_ms=%.1f ms=%.1f",
            result.rows,
            result.pairs_changed,
            result.through.isoformat(),
            result.more,
            (time.thread_time() - cpu_began) * 1e3,
            elapsed * 1e3,
        )
        return result.more
