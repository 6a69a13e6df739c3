"""Where a read task's time goes in the worker, for benchmarks (settings.read_trace_file).

Each read_many task gets one line: epoch seconds when the consumer thread had its message
(task_received), when a pool thread began it (task_prerun), when its reads began and ended
in the DuckDB service, and when its result was stored (task_success, which Celery sends
after storing), then the number of reads it held. bench.read_ingest joins the lines with
its own send and receive times to split a slow read into its steps (README, reads under
write load). Nothing is connected unless the setting names a file.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

from celery import signals

from featurestore import constants

FIELDS = ("received", "started", "query_began", "query_ended", "stored", "reads")


class Reads(Protocol):
    """What is traced: the DuckDB service's read_many."""

    def read_many(self, requests: list[tuple[str, Any]]) -> list[bytes | tuple[str, str]]:
        """Run a batch of reads."""


class ReadTrace:
    """Stamps of the read tasks in flight, written out as each result is stored."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._stamps: dict[str, dict[str, float]] = {}
        self._local = threading.local()

    def received(self, request: Any = None, **_: Any) -> None:
        """task_received, in the consumer thread."""
        if request is not None and request.name == constants.TASK_READ_MANY:
            with self._lock:
                self._stamps[request.id] = {"received": time.time()}

    def started(self, task_id: str = "", **_: Any) -> None:
        """task_prerun, in the pool thread that runs the task."""
        with self._lock:
            stamps = self._stamps.get(task_id)
        if stamps is not None:
            stamps["started"] = time.time()
            self._local.stamps = stamps

    def stored(self, sender: Any = None, **_: Any) -> None:
        """task_success, sent once the result is stored."""
        with self._lock:
            stamps = self._stamps.pop(str(sender.request.id), None)
        self._local.stamps = None
        if stamps is None or len(stamps) != len(FIELDS) - 1:
            return
        stamps["stored"] = time.time()
        line = " ".join(f"{stamps[name]:.6f}" for name in FIELDS[:-1])
        with self._lock:
            self._out.write(f"{line} {int(stamps['reads'])}\n")

    def wrap(self, service: Reads) -> None:
        """Stamp the service's read_many, which runs in the task's pool thread."""
        read_many = service.read_many

        def traced(requests: list[tuple[str, Any]]) -> list[bytes | tuple[str, str]]:
            began = time.time()
            try:
                return read_many(requests)
            finally:
                stamps: dict[str, float] | None = getattr(self._local, "stamps", None)
                if stamps is not None:
                    stamps.update(query_began=began, query_ended=time.time())
                    stamps["reads"] = float(len(requests))

        service.read_many = traced  # type: ignore[method-assign]


def install(path: Path | None, service: Reads) -> ReadTrace | None:
    """Trace read tasks into the file at path (appended, a line at a time); None: nothing."""
    if path is None:
        return None
    trace = ReadTrace(path.open("a", buffering=1))  # open for the worker's life
    signals.task_received.connect(trace.received, weak=False)
    signals.task_prerun.connect(trace.started, weak=False)
    signals.task_success.connect(trace.stored, weak=False)
    trace.wrap(service)
    return trace


def read_lines(path: Path) -> list[tuple[float, ...]]:
    """The trace's lines as tuples of FIELDS, ordered by when the worker had the message."""
    if not path.exists():
        return []
    lines = (line.split() for line in path.read_text().splitlines())
    return sorted(tuple(float(x) for x in fields) for fields in lines if len(fields) == len(FIELDS))
