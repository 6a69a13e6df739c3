"""The read watchdog: one thread that interrupts DuckDB reads whose deadline has passed.

A read registers its cursor and its deadline before it runs and leaves when it ends. The
thread sleeps until the earliest deadline and interrupts the reads still running past it
(DuckDB stops the query at its next vector, and the read's call raises). One thread with a
heap of deadlines, rather than a timer per read: watching costs a heap push and a flag, far
less than a threading.Timer started and cancelled. On the in-process latest read
(bench/read_watchdog.py) a watched read is within noise of a plain one, and a timer per
read makes it clearly slower (README, Benchmarks).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

# Entries of finished reads stay in the heap until their deadline comes up; it is rebuilt
# from the running ones when it holds this many more than twice their number.
_COMPACT_SLACK = 1024
# A stopped read is interrupted again this often until it ends: DuckDB drops an interrupt
# that lands between two statements of a read (a new statement clears it), and a read whose
# statement started just after the interrupt ran seconds past its deadline in the
# hostile-read test (README, Benchmarks).
REFIRE_S = 0.05


class Interruptible(Protocol):
    """What the watchdog stops: a DuckDB connection or cursor."""

    def interrupt(self) -> None:
        """Stop the statement running on it."""


class Watch:
    """One read: its deadline (time.monotonic), whether it still runs, whether the watchdog
    stopped it and why ("deadline", or "memory": stopped to let a write have the memory)."""

    __slots__ = ("cursor", "deadline", "fired", "reason", "running")

    def __init__(self, cursor: Interruptible, deadline: float) -> None:
        self.cursor = cursor
        self.deadline = deadline
        self.running = True
        self.fired = False
        self.reason = ""


class Watchdog:
    """Interrupts each watched read whose deadline passes while it still runs, again and
    again until it ends."""

    def __init__(self, name: str = "read-watchdog") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._running = 0
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.fired = 0  # reads stopped so far

    def watch(self, cursor: Interruptible, deadline: float) -> Watch:
        """Start watching a read on `cursor` that must end by `deadline` (time.monotonic)."""
        watch = Watch(cursor, deadline)
        with self._lock:
            if self._thread is None:
                self._start()
            self._running += 1
            if len(self._heap) > 2 * self._running + _COMPACT_SLACK:
                self._heap = [entry for entry in self._heap if entry[2].running]
                heapq.heapify(self._heap)
            self._push(watch, deadline)
        return watch

    def release(self, watch: Watch) -> None:
        """The read ended: never interrupt its cursor from now on."""
        with self._lock:
            if watch.running:
                watch.running = False
                self._running -= 1

    def stop_all(self, reason: str, wait_s: float) -> int:
        """Interrupt every running read now (for `reason`), and wait up to wait_s for them to
        end and let go of what they hold; how many were stopped."""
        with self._lock:
            stopped = list({id(e[2]): e[2] for e in self._heap if e[2].running}.values())
            for watch in stopped:
                self._fire(watch, reason)
        until = time.monotonic() + wait_s
        while any(watch.running for watch in stopped) and time.monotonic() < until:
            time.sleep(0.01)
        return len(stopped)

    def stop(self) -> None:
        """Stop the thread (reads still watched are no longer interrupted)."""
        with self._lock:
            self._stopped = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _push(self, watch: Watch, at: float) -> None:
        heapq.heappush(self._heap, (at, next(self._order), watch))
        # Deadlines mostly arrive in order; the thread needs waking only for an earlier one.
        if self._heap[0][2] is watch:
            self._wake.notify()

    def _run(self) -> None:
        with self._lock:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and (not self._heap[0][2].running or self._heap[0][0] <= now):
                    watch = heapq.heappop(self._heap)[2]
                    if watch.running:
                        self._fire(watch, "deadline")
                timeout = self._heap[0][0] - now if self._heap else None
                self._wake.wait(timeout)

    def _fire(self, watch: Watch, reason: str) -> None:
        # Under the lock: the read cannot end and its cursor start another statement
        # between the check above and the interrupt (release takes the same lock).
        if not watch.fired:
            watch.fired = True
            watch.reason = reason
            self.fired += 1
        try:
            watch.cursor.interrupt()
        except Exception:  # a closed cursor: nothing runs on it any more
            log.exception("read_interrupt_failed")
        self._push(watch, time.monotonic() + REFIRE_S)
