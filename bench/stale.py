"""Benchmark stacks that outlive their benchmark: found and stopped.

Each benchmark that starts a stack writes a marker (its pid, that process's start time, the
stack's settings) into one folder shared by every checkout run. A benchmark stopped by
SIGTERM or Ctrl-C stops its stack (install_stop_signals) and removes its marker; one killed
by SIGKILL cannot, so the next benchmark finds the marker of a process that no longer runs
and stops that stack first (stop_stale), as `fstore down` would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import psutil

from featurestore import stack
from featurestore.settings import Settings

log = logging.getLogger("bench.stale")


def markers_dir(settings: Settings) -> Path:
    """Where the markers live: beside the shared tool cache, so every run sees them."""
    return settings.tools_dir.parent / "bench-stacks"


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def write_marker(settings: Settings) -> Path:
    """Record that this process runs a stack with these settings; the marker's path."""
    folder = markers_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    marker = folder / f"{pid}.json"
    marker.write_text(
        json.dumps(
            {
                "pid": pid,
                "started": _start_time(pid),
                # Only folders: what stack.down needs (run folder, pid files), no secrets.
                "state_dir": str(settings.state_dir.resolve()),
                "tools_path": str(settings.tools_dir),
            }
        )
    )
    return marker


def _owner_alive(record: dict[str, object]) -> bool:
    pid, started = record.get("pid"), record.get("started")
    if not isinstance(pid, int):
        return False
    # The same pid with another start time is another process: the owner is gone.
    return started is not None and _start_time(pid) == started


def stop_stale(settings: Settings) -> list[Path]:
    """Stop the stack of every marker whose benchmark no longer runs; their state folders."""
    folder = markers_dir(settings)
    stopped = []
    for marker in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            record = json.loads(marker.read_text())
            stale = Settings(
                state_dir=Path(record["state_dir"]), tools_path=Path(record["tools_path"])
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("stale_marker_unreadable marker=%s error=%s", marker, type(exc).__name__)
            marker.unlink(missing_ok=True)
            continue
        if _owner_alive(record):
            continue
        log.warning(
            "stale_stack_stopping owner_pid=%s state_dir=%s", record.get("pid"), stale.state_dir
        )
        stack.down(stale)
        marker.unlink(missing_ok=True)
        stopped.append(stale.state_dir)
    return stopped


class Stopping(SystemExit):
    """Raised in the main thread by SIGTERM or SIGINT, so the stack's `finally` runs."""


@contextlib.contextmanager
def install_stop_signals() -> Iterator[threading.Event]:
    """SIGTERM and SIGINT end the benchmark through its `finally` blocks: the first one
    raises, unless the yielded event is set (the stack is being stopped already); later
    ones are ignored. Only the main thread may set handlers: elsewhere this does nothing."""
    fired = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        if fired.is_set():
            log.warning("stack_stopping_ignored signal=%s", signal.Signals(signum).name)
            return
        fired.set()
        log.warning("stack_stopping signal=%s", signal.Signals(signum).name)
        raise Stopping(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield fired
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
