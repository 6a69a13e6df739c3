"""The CPU priority of the stack's programs: on a machine they share, serving goes first."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from featurestore.settings import Settings

log = logging.getLogger(__name__)

# Programs whose work can wait a few milliseconds: ingest, the DuckDB service, model sync,
# schedules, dashboards. The gRPC server and Redis (every Predict's online read) keep the
# niceness they were started with.
BATCH_COMMANDS = frozenset({"worker", "model-sync", "beat", "flower", "bridge"})
BATCH_SERVICES = frozenset({"kafka", "azurite", "prometheus", "alertmanager", "redis-exporter"})


def program_nice(settings: Settings, command: str, service: str | None = None) -> int:
    """The niceness `fstore COMMAND [SERVICE]` runs at: settings.batch_nice for batch work."""
    batch = command in BATCH_COMMANDS or (command == "service" and service in BATCH_SERVICES)
    return settings.batch_nice if batch else 0


def lower_priority(nice: int) -> int:
    """Raise the niceness of this process's threads to at least `nice`; the main thread's after.

    Linux keeps a niceness per thread, and a thread (or process, such as Kafka's JVM) takes
    its starter's. Called at start-up, before the program's own threads, but after imports
    that start native ones (jemalloc's, Arrow's), hence every thread of /proc/self/task."""
    nice = min(nice, 19)
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:  # a thread that has ended since the listing
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)


def lower_thread_priority(extra: int) -> int:
    """Add `extra` to the calling thread's niceness only (Linux keeps one per thread); the
    new niceness, at most 19."""
    tid = threading.get_native_id()
    nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + extra)
    if extra > 0:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    return nice


def lower_session_priority(pid: int, nice: int) -> bool:
    """Set the niceness of the autogroup of `pid`'s session; False where Linux has none.

    With autogroups (kernel.sched_autogroup_enabled, on by default) Linux shares the CPU
    between sessions first, and by the threads' niceness only within a session. A service
    started in a session of its own (services._proc.spawn_detached, as tests and benchmarks
    start them) is lowered through its session's group; a thread's niceness would not
    order it against the gRPC server in supervisord's session."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{min(nice, 19)}\n")
    except OSError:  # no autogroups in this kernel, or the process has ended
        return False
    return True
