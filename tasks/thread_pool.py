"""The DuckDB service worker's thread pool: the thread that went idle last takes the next task.

Celery's thread pool is a ThreadPoolExecutor, whose idle threads all wait on one queue and
take tasks in turn. With 51 threads and one read at a time, every read then ran on a thread
(and its DuckDB cursor) that had been idle for 50 reads: DuckDB's work for a latest read
cost clearly more CPU than when two threads took turns (README, Benchmarks). Here idle
threads form a stack, so a lone reader keeps meeting the same warm thread, and a burst still
spreads over every thread.

Write tasks can run in a lane of their own (a second executor of a few threads; the worker
names them in the app's settings), so that prefetched writes wait in a queue there rather
than each holding a pool thread that runs its Python beside the reads.
"""

from __future__ import annotations

import atexit
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from celery.concurrency import thread
from celery.concurrency.base import apply_target

from featurestore.priority import lower_thread_priority

_Call = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Idle:
    """An idle thread's wake-up: the call it is handed (None: stop), and the lock it waits on."""

    __slots__ = ("call", "wake")

    def __init__(self) -> None:
        self.call: _Call | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class LastIdleExecutor(Executor):
    """An executor whose thread that went idle last takes the next call."""

    def __init__(self, max_workers: int, name: str = "pool", nice: int = 0) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        self._name = name
        self._nice = nice  # added to each of its threads' OS niceness
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []
        self._waiting: deque[_Call] = deque()
        self._threads: set[threading.Thread] = set()  # read by Celery's pool info
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule fn(*args, **kwargs); its future gets the result or the exception."""
        future: Future[Any] = Future()
        call: _Call = (future, fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            if self._idle:
                idle = self._idle.pop()
                idle.call = call
                idle.wake.release()
            elif len(self._threads) < self._max_workers:
                first = _Idle()  # the new thread's first call, handed over like any other
                first.call = call
                first.wake.release()
                # Daemon threads, so that an idle one never holds the process at exit; the
                # Celery pool below waits for running calls at exit, as Python does for
                # ThreadPoolExecutor.
                worker = threading.Thread(
                    target=self._work,
                    args=(first,),
                    name=f"{self._name}-{len(self._threads)}",
                    daemon=True,
                )
                worker.start()  # before counting it: a thread that cannot start takes no slot
                self._threads.add(worker)
            else:
                self._waiting.append(call)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; threads end once the running and waiting calls are done."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._waiting:
                    self._waiting.popleft()[0].cancel()
            for idle in self._idle:
                idle.wake.release()  # with no call: stop
            self._idle.clear()
            threads = list(self._threads)
        if wait:
            for worker in threads:
                if worker is not threading.current_thread():
                    worker.join()

    def _work(self, idle: _Idle) -> None:
        # Every call is taken out of `idle`, never kept: an idle thread must not keep its
        # last call's arguments (a task's message) alive.
        lower_thread_priority(self._nice)
        idle.wake.acquire()
        call, idle.call = idle.call, None
        while call is not None:
            _run(call)
            with self._lock:
                if self._waiting:
                    call = self._waiting.popleft()
                    continue
                call = None
                if self._shutdown:
                    break
                self._idle.append(idle)
            idle.wake.acquire()
            call, idle.call = idle.call, None
        with self._lock:
            self._threads.discard(threading.current_thread())


def _run(call: _Call) -> None:
    future, fn, args, kwargs = call
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, as ThreadPoolExecutor does
        future.set_exception(exc)
    else:
        future.set_result(result)


# Celery's app setting naming the tasks that run in the write lane, and its threads.
WRITE_TASKS_SETTING = "fstore_write_tasks"
WRITE_THREADS_SETTING = "fstore_write_threads"
WRITE_NICE_SETTING = "fstore_write_nice"


class TaskPool(thread.TaskPool):  # type: ignore[misc]  # celery has no type hints
    """Celery's thread pool on a LastIdleExecutor (worker_pool = "tasks.thread_pool:TaskPool");
    the app's write tasks, when it names them, run in a lane of a few threads of their own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The parent's ThreadPoolExecutor has started no thread yet: replace it.
        self.executor = LastIdleExecutor(self.limit, name="duckdb-pool")
        conf = self.app.conf if self.app is not None else {}
        self._write_tasks = frozenset(conf.get(WRITE_TASKS_SETTING) or ())
        write_threads = int(conf.get(WRITE_THREADS_SETTING) or 0)
        # Writes commit one at a time (Store's lock), but every prefetched write held a pool
        # thread and ran its Python (decoding, the online store's update) beside the others,
        # each one more thread that a read's thread queued behind for the GIL and a CPU. In
        # a lane of their own they wait in line instead (README, reads under write load).
        self._writes = (
            LastIdleExecutor(
                write_threads, name="duckdb-write", nice=int(conf.get(WRITE_NICE_SETTING) or 0)
            )
            if write_threads and self._write_tasks
            else None
        )
        # A cold shutdown never stops the pool: at exit, let running calls (a write
        # transaction) finish, as Python's exit hook does for ThreadPoolExecutor.
        atexit.register(self.executor.shutdown)
        if self._writes is not None:
            atexit.register(self._writes.shutdown)

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_: Any,
    ) -> thread.ApplyResult:
        """Run a task: in the write lane when its name (Celery's first argument) is a
        write task's, else on the pool's threads."""
        executor = self.executor
        if self._writes is not None and args and args[0] in self._write_tasks:
            executor = self._writes
        future = executor.submit(apply_target, target, args, kwargs, callback, accept_callback)
        return thread.ApplyResult(future)

    def on_stop(self) -> None:
        """Stop both executors (the parent stops the pool's)."""
        if self._writes is not None:
            self._writes.shutdown(cancel_futures=True)
        super().on_stop()

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super()._get_info()
        if self._writes is not None:
            info["write-threads"] = len(self._writes._threads)
        return info
