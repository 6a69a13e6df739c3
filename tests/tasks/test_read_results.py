"""How a process receives its read results: one pattern subscription, kept through lost
connections (against the real worker and Redis)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import pyarrow as pa
import pytest
import redis
from celery import Celery, states
from celery.app.task import Context
from prometheus_client import REGISTRY

from featurestore import constants, metrics  # noqa: F401 - registers fstore_failures_total
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.coalescer import MAX_IN_FLIGHT, coalescer
from tasks.client.query import query_table
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

# About a second of work in the DuckDB service (several on a loaded machine).
SLOW_SQL = "SELECT count(*) AS n FROM range(?) t(i) WHERE i % 7 = 3"
N = 1_000_000_000


def listener_failures() -> float:
    labels = {"program": "reader", "kind": "result_listener"}
    return REGISTRY.get_sample_value("fstore_failures_total", labels) or 0.0


def test_reads_are_answered_across_a_lost_result_connection(stack: Settings) -> None:
    app = configure(stack)
    assert query_table(app, "SELECT 1 AS one").column("one").to_pylist() == [1]
    failures_before = listener_failures()
    client = redis.Redis.from_url(stack.redis_url)
    stop = threading.Event()

    def cut_result_connections() -> None:
        # The worker publishes results; readers subscribe. Only the subscribers are cut.
        while not stop.is_set():
            client.client_kill_filter(_type="pubsub")
            time.sleep(0.05)  # a cut every 50 ms on purpose, not a wait

    cutter = threading.Thread(target=cut_result_connections)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(query_table, app, SLOW_SQL, [N + i], timeout=60) for i in range(4)]
        # Cut once every read is sent (or, on a fast machine, already answered): the cuts
        # must hit reads waiting for their results.
        sent = coalescer(app)
        assert wait_until(
            lambda: (
                sum(len(b.reads) for b in list(sent._in_flight.values()))
                + sum(f.done() for f in futures)
                == 4
            )
        )
        cutter.start()
        try:
            results = [f.result(timeout=90) for f in futures]
        finally:
            stop.set()
            cutter.join()
    assert [r.column("n").to_pylist() for r in results] == [
        [len(range(3, N + i, 7))] for i in range(4)
    ]
    assert listener_failures() > failures_before
    # And the subscription is back for the next read.
    assert query_table(app, "SELECT 2 AS two").column("two").to_pylist() == [2]


def test_reads_beyond_the_batches_in_flight_wait_and_go_together(stack: Settings) -> None:
    app = configure(stack)
    reads = MAX_IN_FLIGHT * 10
    with ThreadPoolExecutor(reads) as pool:
        futures = [
            pool.submit(query_table, app, "SELECT ? AS i", [i], timeout=60) for i in range(reads)
        ]
        values = [f.result(timeout=90).column("i").to_pylist() for f in futures]
    assert values == [[i] for i in range(reads)]
    assert coalescer(app)._in_flight == {}


def sent_or_done(app: Celery, future: Future[pa.Table], params: list[int]) -> bool:
    """Whether the read of these parameters left in a batch (or is already answered)."""
    batches = list(coalescer(app)._in_flight.values())
    return future.done() or any(r.params == params for b in batches for r in b.reads)


def test_a_read_does_not_wait_for_batches_that_hold_every_slot(stack: Settings) -> None:
    app = configure(stack)
    with ThreadPoolExecutor(MAX_IN_FLIGHT) as pool:
        slow = []
        for i in range(MAX_IN_FLIGHT):  # one batch each: the coalescer is idle between them
            # Seconds, not minutes: the service stops any read at FSTORE_READ_TIME_LIMIT_S (30).
            slow.append(pool.submit(query_table, app, SLOW_SQL, [1_000_000_000 + i], timeout=120))
            assert wait_until(partial(sent_or_done, app, slow[-1], [1_000_000_000 + i]), timeout=30)
        fast = query_table(app, "SELECT 3 AS three", timeout=60)
        assert fast.column("three").to_pylist() == [3]
        assert not any(f.done() for f in slow), "the slow reads should still be running"
        for f in slow:
            f.result(timeout=180)


def test_a_stored_success_is_kept_except_for_reads(
    redis_service: object, settings: Settings
) -> None:
    """Celery's guard against a re-run task overwriting a success stays for every task but
    reads, whose results are stored without looking first (tasks.result_backend)."""
    backend = configure(settings).backend
    for task, kept in ((constants.TASK_WRITE_BATCH, "first"), (constants.TASK_READ_MANY, "second")):
        task_id = f"test-guard-{task}-{time.monotonic_ns()}"
        request = Context(task=task, id=task_id, args=[], kwargs={})
        for result in ("first", "second"):
            backend.store_result(task_id, result, states.SUCCESS, request=request)
        assert backend.get_task_meta(task_id)["result"] == kept, task
