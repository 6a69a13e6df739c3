"""The worker's thread pool: the thread idle the shortest takes the next call (no services)."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from collections.abc import Iterator

import pytest
from celery import Celery

from tasks.thread_pool import (
    WRITE_NICE_SETTING,
    WRITE_TASKS_SETTING,
    WRITE_THREADS_SETTING,
    LastIdleExecutor,
    TaskPool,
)
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


def _lane_pool(write_threads: int, write_nice: int = 0) -> TaskPool:
    app = Celery("lane-test", set_as_current=False)
    app.conf[WRITE_TASKS_SETTING] = ["write"]
    app.conf[WRITE_THREADS_SETTING] = write_threads
    app.conf[WRITE_NICE_SETTING] = write_nice
    return TaskPool(limit=4, app=app)


def _thread_name(*_: object) -> str:
    return threading.current_thread().name


def test_write_tasks_run_in_their_lane_one_at_a_time_while_reads_go_past() -> None:
    pool = _lane_pool(write_threads=1)
    release = threading.Event()
    ran: list[tuple[str, str]] = []

    def task(name: str, *_: object) -> None:
        ran.append((name, threading.current_thread().name))
        if name == "write":
            release.wait(5)

    try:
        first = pool.on_apply(task, args=("write", 1), callback=lambda _: None)
        second = pool.on_apply(task, args=("write", 2), callback=lambda _: None)
        assert wait_until(lambda: len(ran) == 1, timeout=5)
        # The lane's one thread holds the first write; a read still runs at once.
        pool.on_apply(task, args=("read",), callback=lambda _: None).get(timeout=5)
        assert [name for name, _ in ran] == ["write", "read"], "the second write waits"
        release.set()
        first.get(timeout=5)
        second.get(timeout=5)
        assert [thread.split("-")[1] for _, thread in ran] == ["write", "pool", "write"]
    finally:
        release.set()
        pool.on_stop()


def test_without_write_threads_writes_share_the_pool() -> None:
    pool = _lane_pool(write_threads=0)
    names: list[str] = []
    try:
        pool.on_apply(_thread_name, args=("write",), callback=names.append).get(timeout=5)
        assert names[0].startswith("duckdb-pool")
    finally:
        pool.on_stop()


def _thread_nice(*_: object) -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_the_write_lane_threads_run_at_a_lower_priority_than_the_reads() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    pool = _lane_pool(write_threads=1, write_nice=3)
    nices: dict[str, int] = {}
    try:
        for name in ("write", "read"):
            pool.on_apply(
                _thread_nice, args=(name,), callback=lambda nice, n=name: nices.update({n: nice})
            ).get(timeout=5)
        assert nices == {"write": min(19, base + 3), "read": base}
        assert os.getpriority(os.PRIO_PROCESS, 0) == base, "the caller's own is unchanged"
    finally:
        pool.on_stop()
