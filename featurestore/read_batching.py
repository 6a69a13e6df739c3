"""Coalescing of concurrent reads: what the threads of one process ask for at the same
moment travels to the DuckDB service as one read task.

Each read still gets its own result or error. A lone read is sent at once (no waiting to
fill a batch), so latency at concurrency 1 is unchanged; at concurrency 50 the number of
Celery tasks, whose fixed cost dominates small reads, falls by the batch size.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from featurestore import constants
from featurestore.errors import QueryError, ReadOnlyError

log = logging.getLogger(__name__)

MAX_BATCH = 50
_ERRORS: dict[str, type[QueryError]] = {"ReadOnlyError": ReadOnlyError, "QueryError": QueryError}


@dataclass
class _Read:
    sql: str
    params: Any
    timeout: float
    future: Future[bytes] = field(default_factory=Future)


def outcome_to_result(outcome: Any) -> bytes:
    """One entry of a read_many result: Arrow IPC bytes, or raise the read's error."""
    if isinstance(outcome, bytes):
        return outcome
    kind, message = outcome
    raise _ERRORS.get(kind, QueryError)(message)


class ReadCoalescer:
    """Groups the reads waiting in this process into read_many tasks."""

    # One waiter per batch in flight: a slow batch must not hold up the results of others.
    def __init__(self, app: Celery, waiters: int = MAX_BATCH) -> None:
        self.app = app
        self._pending: queue.SimpleQueue[_Read] = queue.SimpleQueue()
        self._waiters = ThreadPoolExecutor(waiters, thread_name_prefix="read-waiter")
        threading.Thread(target=self._dispatch, name="read-coalescer", daemon=True).start()

    def submit(self, sql: str, params: Any, timeout: float) -> Future[bytes]:
        """Queue one read; its future gets the Arrow IPC bytes or the read's error."""
        read = _Read(sql, params, timeout)
        self._pending.put(read)
        return read.future

    def _dispatch(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            try:
                result = self.app.send_task(  # routed to the read queue by the app
                    constants.TASK_READ_MANY, args=[[(r.sql, r.params) for r in batch]]
                )
            except Exception as exc:  # noqa: BLE001 - each caller gets the broker's error
                for read in batch:
                    read.future.set_exception(exc)
                continue
            self._waiters.submit(self._resolve, result, batch)

    @staticmethod
    def _resolve(result: AsyncResult, batch: list[_Read]) -> None:
        try:
            outcomes = result.get(timeout=max(r.timeout for r in batch))
        except Exception as exc:  # noqa: BLE001 - delivered to every caller of the batch
            for read in batch:
                if not read.future.done():
                    read.future.set_exception(exc)
            return
        for read, outcome in zip(batch, outcomes, strict=True):
            try:
                read.future.set_result(outcome_to_result(outcome))
            except QueryError as exc:
                read.future.set_exception(exc)


_lock = threading.Lock()
_coalescers: dict[tuple[int, int], ReadCoalescer] = {}


def coalescer(app: Celery) -> ReadCoalescer:
    """This process's coalescer for the app (made on first use; a forked child makes its own)."""
    key = (os.getpid(), id(app))
    with _lock:
        found = _coalescers.get(key)
        if found is None:
            found = _coalescers[key] = ReadCoalescer(app)
        return found
