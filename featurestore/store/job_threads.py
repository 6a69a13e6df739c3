"""More DuckDB threads while a batch job runs (a training set), the service's number again
after the last one ends.

DuckDB's `threads` is global to the database: there is no per-query or per-session setting
(DuckDB 2.0). The service keeps it at one (settings.duckdb_threads: a second thread added
hand-over time to a point read), which leaves a training set on one core of an idle
machine. Raised for the job's duration only, the build's operators (hash aggregate, ASOF
join, sort, Parquet write) use both cores, while a point read still runs its own small
pipeline on the thread that asked for it; the scheduler's extra thread is busy with the
job's tasks meanwhile (README, "Against Feast": wall time and point read p50/p99 beside a
build, measured by bench/training_alternatives.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

log = logging.getLogger(__name__)


class JobThreads:
    """DuckDB's threads at `job` while any job runs, at `base` otherwise; jobs may overlap
    (the first raises, the last restores). A base of 0 (DuckDB's own default, every core)
    is left alone."""

    def __init__(self, base: int, job: int) -> None:
        self.base = base
        self.job = job
        self._lock = threading.Lock()
        self._running = 0

    @contextmanager
    def raised(self, cur: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """Run the block with DuckDB's threads at `job` (set through this cursor)."""
        if self.base < 1 or self.job <= self.base:
            yield
            return
        with self._lock:
            self._running += 1
            if self._running == 1:
                cur.execute(f"SET GLOBAL threads = {int(self.job)}")
                log.info("duckdb_threads_raised threads=%d", self.job)
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    cur.execute(f"SET GLOBAL threads = {int(self.base)}")
                    log.info("duckdb_threads_restored threads=%d", self.base)
