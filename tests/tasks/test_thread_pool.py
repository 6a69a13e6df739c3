"""The worker's thread pool: the thread idle the shortest takes the next call (no services)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from tasks.thread_pool import LastIdleExecutor
from tests.helpers import wait_until


@pytest.fixture
def pool() -> Iterator[LastIdleExecutor]:
    executor = LastIdleExecutor(4)
    yield executor
    executor.shutdown(cancel_futures=True)


def wait_all_idle(pool: LastIdleExecutor) -> None:
    # Polled every millisecond, not wait_until's 200 ms: it runs 20 times in a test.
    deadline = time.monotonic() + 5
    while len(pool._idle) < len(pool._threads):
        assert time.monotonic() < deadline, "threads still busy after 5 s"
        time.sleep(0.001)


def test_idle_threads_keep_nothing_of_their_last_call(pool: LastIdleExecutor) -> None:
    class Payload:
        pass

    payload = Payload()
    alive = weakref.ref(payload)
    pool.submit(lambda p: None, payload).result(timeout=5)
    del payload
    wait_all_idle(pool)
    gc.collect()
    assert alive() is None


def test_results_and_exceptions_reach_the_future(pool: LastIdleExecutor) -> None:
    assert pool.submit(pow, 2, 10).result(timeout=5) == 1024
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=5)


def test_calls_one_at_a_time_run_on_the_thread_idle_the_shortest(
    pool: LastIdleExecutor,
) -> None:
    release = threading.Event()
    started: list[int] = []

    def hold() -> bool:
        started.append(1)
        return release.wait(5)

    # Start every thread: four calls at once.
    busy = [pool.submit(hold) for _ in range(4)]
    assert wait_until(lambda: len(started) == 4, timeout=5)
    release.set()
    for future in busy:
        future.result(timeout=5)
    names = set()
    for _ in range(20):
        wait_all_idle(pool)  # a future is done a moment before its thread is idle again
        names.add(pool.submit(lambda: threading.current_thread().name).result(5))
    assert len(names) == 1, names


def test_a_burst_runs_at_once_up_to_the_limit_then_waits_in_order(
    pool: LastIdleExecutor,
) -> None:
    release = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> int:
        with lock:
            started.append(i)
        release.wait(5)
        return i

    futures = [pool.submit(call, i) for i in range(10)]
    assert wait_until(lambda: len(started) >= 4, timeout=5)
    assert sorted(started) == [0, 1, 2, 3], "four threads, four calls running"
    assert len(pool._threads) == 4
    release.set()
    assert [f.result(timeout=5) for f in futures] == list(range(10))
    assert started[4:] == list(range(4, 10)), "waiting calls run in order"


def test_shutdown_cancels_waiting_calls_and_refuses_new_ones() -> None:
    pool = LastIdleExecutor(1)
    release, began = threading.Event(), threading.Event()

    def hold() -> bool:
        began.set()
        return release.wait(5)

    running = pool.submit(hold)
    waiting = pool.submit(pow, 2, 2)
    assert began.wait(timeout=5)
    # Released a moment later on purpose: shutdown must wait for the running call.
    threading.Timer(0.2, release.set).start()
    pool.shutdown(cancel_futures=True)
    assert running.result(timeout=0) is True
    assert waiting.cancelled()
    assert not pool._threads
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pow, 2, 2)
