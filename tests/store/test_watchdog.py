"""The read watchdog on its own: it interrupts what runs past its deadline, and nothing else
(no services, no DuckDB: cursors that record their interrupts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from featurestore.store.watchdog import REFIRE_S, Watchdog
from tests.helpers import wait_until


class Cursor:
    """Records when it was interrupted."""

    def __init__(self) -> None:
        self.interrupted: list[float] = []

    def interrupt(self) -> None:
        self.interrupted.append(time.monotonic())


@pytest.fixture
def watchdog() -> Iterator[Watchdog]:
    dog = Watchdog()
    yield dog
    dog.stop()


def test_a_read_past_its_deadline_is_interrupted_until_it_ends(watchdog: Watchdog) -> None:
    cursor = Cursor()
    deadline = time.monotonic() + 0.1
    watch = watchdog.watch(cursor, deadline)
    # DuckDB drops an interrupt that lands between two statements: until the read ends,
    # it is interrupted again every REFIRE_S.
    assert wait_until(lambda: len(cursor.interrupted) >= 3, timeout=10)
    assert watch.fired and watch.reason == "deadline" and watch.running
    assert cursor.interrupted[0] >= deadline
    gaps = [b - a for a, b in zip(cursor.interrupted, cursor.interrupted[1:], strict=False)]
    assert min(gaps) >= REFIRE_S * 0.9
    watchdog.release(watch)
    time.sleep(0.2)  # after the read ended, nothing more reaches its cursor
    settled = len(cursor.interrupted)
    time.sleep(4 * REFIRE_S)  # four re-interrupt periods pass on purpose: none may come
    assert len(cursor.interrupted) == settled
    assert watchdog.fired == 1


def test_a_read_released_before_its_deadline_is_never_interrupted(watchdog: Watchdog) -> None:
    cursor = Cursor()
    watch = watchdog.watch(cursor, time.monotonic() + 0.1)
    watchdog.release(watch)
    # A later read on the same cursor must not be hit by the old deadline.
    later = watchdog.watch(cursor, time.monotonic() + 60)
    time.sleep(0.4)  # past the old deadline on purpose: nothing may fire meanwhile
    assert cursor.interrupted == []
    assert not watch.fired and not later.fired
    watchdog.release(later)


def test_an_earlier_deadline_arriving_later_wakes_the_watchdog(watchdog: Watchdog) -> None:
    slow, fast = Cursor(), Cursor()
    long_watch = watchdog.watch(slow, time.monotonic() + 3600)
    time.sleep(0.05)  # the thread now sleeps until the long deadline
    watchdog.watch(fast, time.monotonic() + 0.1)
    assert wait_until(lambda: bool(fast.interrupted), timeout=10)
    assert slow.interrupted == []
    watchdog.release(long_watch)


def test_reads_are_interrupted_in_deadline_order(watchdog: Watchdog) -> None:
    cursors = [Cursor() for _ in range(5)]
    now = time.monotonic()
    for index, cursor in reversed(list(enumerate(cursors))):
        watchdog.watch(cursor, now + 0.1 + index * 0.05)
    assert wait_until(lambda: all(c.interrupted for c in cursors), timeout=10)
    times = [c.interrupted[0] for c in cursors]
    assert times == sorted(times)


def test_finished_reads_do_not_pile_up(watchdog: Watchdog) -> None:
    cursor = Cursor()
    for _ in range(20_000):
        watchdog.release(watchdog.watch(cursor, time.monotonic() + 3600))
    running = watchdog.watch(cursor, time.monotonic() + 0.1)
    assert len(watchdog._heap) <= 2 * 1 + 1024 + 1
    assert wait_until(lambda: running.fired, timeout=10)
    assert cursor.interrupted
    watchdog.release(running)


def test_a_cursor_that_cannot_be_interrupted_does_not_stop_the_watchdog(
    watchdog: Watchdog,
) -> None:
    class Closed:
        def interrupt(self) -> None:
            raise RuntimeError("connection closed")

    closed = watchdog.watch(Closed(), time.monotonic() + 0.05)
    cursor = Cursor()
    watchdog.watch(cursor, time.monotonic() + 0.1)
    assert wait_until(lambda: bool(cursor.interrupted), timeout=10)
    watchdog.release(closed)


def test_stop_ends_the_thread() -> None:
    dog = Watchdog()
    dog.watch(Cursor(), time.monotonic() + 3600)
    thread = dog._thread
    assert thread is not None and thread.is_alive()
    dog.stop()
    assert not thread.is_alive()


def test_stop_all_interrupts_every_running_read_and_waits_for_them(watchdog: Watchdog) -> None:
    cursors = [Cursor() for _ in range(3)]
    watches = [watchdog.watch(cursor, time.monotonic() + 3600) for cursor in cursors]
    done = watchdog.watch(Cursor(), time.monotonic() + 3600)
    watchdog.release(done)

    def end_reads() -> None:  # the interrupted reads end a little later
        time.sleep(0.2)
        for watch in watches:
            watchdog.release(watch)

    threading.Thread(target=end_reads).start()
    began = time.monotonic()
    assert watchdog.stop_all("memory", wait_s=10) == 3
    assert not any(watch.running for watch in watches)
    assert time.monotonic() - began < 10
    assert all(1 <= len(c.interrupted) <= 10 for c in cursors)
    assert all(watch.fired and watch.reason == "memory" for watch in watches)
    assert not done.fired
