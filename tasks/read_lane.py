"""The DuckDB worker's read lane: threads that each take read batches straight from a Redis
list and run them, beside Celery's consumer.

A read_many task through Celery waits for the worker's consumer thread (one event loop that
also takes every write message), is handed to a pool thread, and goes through Celery's
tracer before its result is stored. Here the thread blocked on BRPOP is the one that runs
the read and stores its result, in the Celery result backend's format and channel, so the
client's result listener takes it as any other (README, reads under write load). A batch
taken by a worker that is then killed is lost, as a Celery message is without ack
emulation (tasks.app): its callers time out.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any, Protocol

import msgpack
import redis
from celery import Celery, states

from featurestore import constants, metrics
from tasks.client.coalescer import lane_key
from tasks.read_trace import ReadTrace

log = logging.getLogger(__name__)

# What the backend's result meta reads of a task's request: a read has no children, and
# tasks.result_backend stores a read's result in one round trip.
_REQUEST = SimpleNamespace(task=constants.TASK_READ_MANY, children=[])


class Reads(Protocol):
    """What the lane runs: the DuckDB service's read_many."""

    def read_many(self, requests: list[tuple[str, Any]]) -> list[bytes | tuple[str, str]]:
        """Run a batch of reads."""


class ReadLane:
    """Threads taking read batches from the lane's Redis list until stopped."""

    def __init__(
        self,
        app: Celery,
        redis_url: str,
        read_queue: str,
        service: Reads,
        threads: int,
        trace: ReadTrace | None = None,
    ) -> None:
        self._app = app
        self._key = lane_key(read_queue)
        self._service = service
        self._trace = trace
        self._stop = threading.Event()
        # One connection a thread: each blocks in its own BRPOP.
        self._clients = [redis.Redis.from_url(redis_url) for _ in range(threads)]
        self._threads = [
            threading.Thread(target=self._run, args=(c,), name=f"read-lane-{i}", daemon=True)
            for i, c in enumerate(self._clients)
        ]

    def start(self) -> None:
        """Start taking batches."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop once the batches being run are answered (each read has its deadline; an
        idle thread notices within its BRPOP's second)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for client in self._clients:
            client.close()

    def _run(self, client: redis.Redis) -> None:
        while not self._stop.is_set():
            try:
                item: Any = client.brpop([self._key], timeout=1)
            except redis.RedisError as exc:
                metrics.FAILURES.labels("duckdb_worker", "read_lane").inc()
                log.warning("read_lane_redis_error error=%s retry_s=1", type(exc).__name__)
                self._stop.wait(1.0)
                continue
            if item is not None:
                self._serve(item[1])

    def _serve(self, message: bytes) -> None:
        try:
            task_id, requests = msgpack.unpackb(message, raw=False)
        except Exception:  # a message nobody can answer; its callers time out
            metrics.FAILURES.labels("duckdb_worker", "read_lane_decode").inc()
            log.exception("read_lane_bad_message bytes=%d", len(message))
            return
        trace = self._trace
        if trace is not None:
            trace.received(request=SimpleNamespace(id=task_id, name=constants.TASK_READ_MANY))
            trace.started(task_id=task_id)
        backend = self._app.backend
        try:
            result: Any = self._service.read_many(requests)
            state = states.SUCCESS
        except Exception as exc:  # the callers get it, as from a Celery task
            log.exception("read_lane_failed task_id=%s", task_id)
            result, state = exc, states.FAILURE
        try:
            backend.store_result(task_id, result, state, request=_REQUEST)
        except Exception:  # its callers time out; the lane goes on
            metrics.FAILURES.labels("duckdb_worker", "read_lane_store").inc()
            log.exception("read_lane_store_failed task_id=%s", task_id)
            return
        if trace is not None:
            trace.stored(sender=SimpleNamespace(request=SimpleNamespace(id=task_id)))
