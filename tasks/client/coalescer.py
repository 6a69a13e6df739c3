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
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, states
from kombu.entity import Queue

from featurestore import constants, metrics
from featurestore.errors import (
    FeatureStoreError,
    QueryError,
    QueryTimeoutError,
    ReadLimitError,
    ReadOnlyError,
)
from tasks.client.results import ResultListener

log = logging.getLogger(__name__)

MAX_BATCH = 50
# Batches of one process in flight at once. While they are, new reads wait and go together
# in the next batch: at concurrency 50, unbounded dispatch sent batches of two or three
# reads, and a task costs the worker about the same whatever it holds. 2 gave more reads/s
# than 4 (2 cores), and the same at concurrency 1 (README, Benchmarks: read path).
MAX_IN_FLIGHT = 2
# A batch waits this long at most for a slot, then goes anyway: slots held by tasks that will
# never be answered (lost with a killed worker) must not stall this process's reads.
SLOT_WAIT_S = 2.0
# The errors a read's outcome can name; any other name comes back as a QueryError.
_ERRORS: dict[str, type[FeatureStoreError]] = {
    error.__name__: error
    for error in (QueryError, ReadOnlyError, ReadLimitError, QueryTimeoutError)
}


@dataclass
class _Read:
    sql: str
    params: Any
    timeout: float
    future: Future[bytes] = field(default_factory=Future)
    # Wall-clock, so that the DuckDB service (another process) can stop the read when it
    # passes, time spent queued included.
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.time() + self.timeout


@dataclass
class _Batch:
    reads: list[_Read]
    deadline: float
    holds_slot: bool


def claim(future: Future[bytes]) -> bool:
    """Take a read's future for delivery: False when its caller cancelled it (gave up).

    Once claimed, a caller's cancel() fails instead of racing the result in, which a done()
    check followed by set_result let happen (InvalidStateError in the delivering thread).
    """
    try:
        return future.set_running_or_notify_cancel()
    except RuntimeError:  # already running or finished: delivered before
        return False


def outcome_to_result(outcome: Any) -> bytes:
    """One entry of a read_many result: its bytes (reads.result_format), or raise its
    error."""
    if isinstance(outcome, bytes):
        return outcome
    kind, message = outcome
    raise _ERRORS.get(kind, QueryError)(message)


class Coalescer:
    """Groups the reads waiting in this process into read_many tasks."""

    def __init__(self, app: Celery, read_queue: Queue) -> None:
        self.app = app
        self.read_queue = read_queue
        self._pending: queue.SimpleQueue[_Read] = queue.SimpleQueue()
        self._in_flight: dict[str, _Batch] = {}
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._lock = threading.Lock()
        self._results = ResultListener(app, self._on_result, self._resync)
        threading.Thread(target=self._dispatch, name="read-coalescer", daemon=True).start()

    def submit(self, sql: str, params: Any, timeout: float) -> Future[bytes]:
        """Queue one read; its future gets the result's bytes (featurestore.reads.result_format) or
        its error."""
        read = _Read(sql, params, timeout)
        # When nothing is in flight, the read leaves from the caller's own thread: waking the
        # dispatcher costs a lone read more than a batch would save.
        if (
            not self._in_flight
            and self._pending.empty()
            and self._results.ready()
            and self._slots.acquire(blocking=False)
        ):
            self._send_now(read)
        else:
            self._pending.put(read)
        return read.future

    def _send_now(self, read: _Read) -> None:
        try:
            producers = self.app.producer_pool.acquire(block=True, timeout=read.timeout)
        except Exception as exc:  # noqa: BLE001 - the caller gets it through its future
            self._slots.release()
            if claim(read.future):
                read.future.set_exception(exc)
            return
        with producers as producer:
            self._send(producer, [read], holds_slot=True)

    def _dispatch(self) -> None:
        # Every read of this process that is not sent from its caller's thread goes through
        # here: whatever fails, log it and go on, or the process's batched reads would stall.
        while True:
            try:
                with self.app.producer_pool.acquire(block=True) as producer:
                    while True:
                        self._dispatch_one(producer)
            except Exception:
                metrics.FAILURES.labels("reader", "read_dispatch").inc()
                log.exception("read_dispatch_failed retry_in_s=1")
                time.sleep(1.0)

    def _dispatch_one(self, producer: Any) -> None:
        try:
            batch = [self._pending.get(timeout=1.0)]
        except queue.Empty:
            self._expire()
            return
        holds_slot = self._slots.acquire(blocking=False)
        if not holds_slot:
            # A batch whose callers all gave up (their deadline passed) gives up its slot at
            # once: the next read must not wait for an answer nobody reads.
            self._expire()
            holds_slot = self._slots.acquire(timeout=SLOT_WAIT_S)
        if not holds_slot:
            self._expire()
            log.warning("read_batch_without_slot in_flight=%d", len(self._in_flight))
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._pending.get_nowait())
            except queue.Empty:
                break
        self._send(producer, batch, holds_slot)

    def _send(self, producer: Any, reads: list[_Read], holds_slot: bool) -> None:
        reads = [r for r in reads if not r.future.cancelled()]  # callers that gave up
        if not reads:
            if holds_slot:
                self._slots.release()
            return
        timeout = max(r.timeout for r in reads)
        self._results.wait_ready(timeout)
        task_id = self._results.new_task_id()
        with self._lock:
            self._in_flight[task_id] = _Batch(reads, time.monotonic() + timeout, holds_slot)
        try:
            # A short argsrepr (what Flower and logs show) spares Celery a safe repr of every
            # statement and parameter of the batch (README, Benchmarks: read path).
            message = self.app.amqp.create_task_message(
                task_id,
                constants.TASK_READ_MANY,
                ([(r.sql, r.params, r.deadline) for r in reads],),
                {},
                argsrepr=f"<{len(reads)} reads>",
                kwargsrepr="{}",
            )
            self.app.amqp.send_task_message(
                producer, constants.TASK_READ_MANY, message, queue=self.read_queue
            )
        except Exception as exc:  # noqa: BLE001 - each caller gets the broker's error
            self._fail(task_id, exc)

    def _on_result(self, task_id: str, meta: dict[str, Any]) -> None:
        if meta["status"] != states.SUCCESS:
            self._fail(task_id, self.app.backend.exception_to_python(meta["result"]))
            return
        outcomes = iter(meta["result"])

        def deliver(read: _Read) -> None:
            try:
                read.future.set_result(outcome_to_result(next(outcomes)))
            except FeatureStoreError as exc:
                read.future.set_exception(exc)

        self._finish(task_id, deliver)

    def _fail(self, task_id: str, error: BaseException) -> None:
        def fail(read: _Read) -> None:
            read.future.set_exception(error)

        self._finish(task_id, fail)

    def _finish(self, task_id: str, deliver: Callable[[_Read], None]) -> None:
        with self._lock:
            batch = self._in_flight.pop(task_id, None)
        if batch is None:
            return
        if batch.holds_slot:
            self._slots.release()
        for read in batch.reads:
            if claim(read.future):  # its caller may have given up already
                deliver(read)

    def _resync(self) -> None:
        with self._lock:
            waiting = list(self._in_flight)
        for task_id in waiting:
            meta = self._results.fetch(task_id)
            if meta is not None:
                self._on_result(task_id, meta)

    def _expire(self) -> None:
        # Callers time out on their own; this forgets batches nobody waits for any more (a
        # read task lost with a killed worker would otherwise hold its slot until the
        # longest timeout of the batch).
        now = time.monotonic()
        with self._lock:
            expired = [
                task_id
                for task_id, batch in self._in_flight.items()
                if batch.deadline < now or all(r.future.done() for r in batch.reads)
            ]
            for task_id in expired:
                if self._in_flight.pop(task_id).holds_slot:
                    self._slots.release()
        if expired:
            log.warning("read_batches_expired count=%d", len(expired))


_lock = threading.Lock()
_coalescers: dict[tuple[int, int], Coalescer] = {}


def coalescer(app: Celery) -> Coalescer:
    """This process's coalescer for the app (made on first use; a forked child makes its own)."""
    key = (os.getpid(), id(app))
    with _lock:
        found = _coalescers.get(key)
        if found is None:
            read_queue = app.amqp.router.route({}, constants.TASK_READ_MANY)["queue"]
            found = _coalescers[key] = Coalescer(app, read_queue)
        return found
