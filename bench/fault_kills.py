"""SIGKILL one part of the running stack, see it restarted, and measure what it cost.

A supervisord program is restarted by supervisord; its restart time is when its new
process is first seen. A backing service is restarted through its start-up function
(ManagedService.ensure, as `fstore up` would; the stack's watcher program may win that
race, under the same lock); its restart time is when it answers again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from bench.fault_traffic import EVENT_TIME_SQL, Traffic
from featurestore import stack
from featurestore.services import (
    AzuriteService,
    KafkaService,
    ManagedService,
    PrometheusService,
    RedisService,
)
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import query_table

log = logging.getLogger("bench.faults")

SERVICES: dict[str, Callable[[Settings], ManagedService]] = {
    "redis": RedisService,
    "kafka": KafkaService,
    "azurite": AzuriteService,
    "prometheus": PrometheusService,
}
# The order of the issue: programs one at a time, services one at a time, then two together.
ALL_KILLS: list[tuple[str, ...]] = [
    ("bridge",),
    ("duckdb-worker",),
    ("model-sync",),
    ("beat",),
    ("grpc",),
    ("redis",),
    ("kafka",),
    ("azurite",),
    ("prometheus",),
    ("duckdb-worker", "bridge"),
]
RECOVERY_TARGET_S = 15.0


@dataclass
class KillRecord:
    """One fault: when it struck, when its parts were back, and what it cost."""

    name: str
    killed_at: float
    rows_at_kill: int = 0  # events the producer had sent when the kill struck
    restarted_at: float = 0.0
    recovered_at: float = 0.0
    window_end: float = 0.0
    ingest_stall_s: float | None = None
    # The longest stretch without a stream row landing, from the restart to the window's end
    # (a lost batch can stop ingestion again after it first moved).
    ingest_gap_s: float | None = None
    predict_failed_s: float = 0.0
    predict_errors: int = 0
    read_failed_s: float = 0.0
    read_errors: int = 0
    error_kinds: list[str] = field(default_factory=list)

    @property
    def down_s(self) -> float:
        """From the kill to the restart."""
        return self.restarted_at - self.killed_at

    @property
    def within_target(self) -> bool:
        """Ingestion moved again within the recovery target of the restart, and did not
        stop for longer than that afterwards."""
        return all(
            figure is not None and figure <= RECOVERY_TARGET_S
            for figure in (self.ingest_stall_s, self.ingest_gap_s)
        )


def _sigkill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (a crash takes a program's children with it;
    an orphaned child would keep a port or the DuckDB file)."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def _program_pids(settings: Settings) -> dict[str, tuple[str, int]]:
    return {p.name: (p.state, p.pid) for p in stack.programs(settings)}


def _restart_programs(settings: Settings, old: dict[str, int], deadline: float) -> list[float]:
    """Wait until supervisord runs every program again; when each new process was first
    seen (polled every 0.1 s, all at once: psutil's start times are off by up to a second,
    from the boot time's rounding)."""
    seen: dict[str, float] = {}
    while len(seen) < len(old) or any(
        _program_pids(settings)[name][0] != "RUNNING" for name in old
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"supervisord did not restart {', '.join(old)}")
        pids = _program_pids(settings)
        for name, old_pid in old.items():
            pid = pids.get(name, ("", 0))[1]
            if name not in seen and pid and pid != old_pid:
                seen[name] = time.time()
        time.sleep(0.1)
    return list(seen.values())


def _restart_service(service: ManagedService, deadline: float) -> float:
    """Wait until the killed service stops answering, start it again; when it answers."""
    while service.probe() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    service.ensure()
    return time.time()


def strike(
    settings: Settings, parts: tuple[str, ...], traffic: Traffic, timeout: float = 300
) -> KillRecord:
    """SIGKILL every part at once, wait for each to run again; the record so far."""
    programs = _program_pids(settings)
    targets: list[tuple[str, int]] = []
    for part in parts:
        if part in SERVICES:
            pid = SERVICES[part](settings).status().pid
        else:
            pid = programs.get(part, ("", 0))[1]
        if not pid:
            raise RuntimeError(f"{part} has no running process to kill")
        targets.append((part, pid))
    record = KillRecord("+".join(parts), killed_at=time.time(), rows_at_kill=traffic.sent_rows)
    for part, pid in targets:
        _sigkill_tree(pid)
        log.info("fault_kill part=%s pid=%d", part, pid)
    deadline = time.monotonic() + timeout
    programs_killed = {part: pid for part, pid in targets if part not in SERVICES}
    restarts = [
        _restart_service(SERVICES[part](settings), deadline)
        for part, _pid in targets
        if part in SERVICES
    ]
    if programs_killed:
        restarts += _restart_programs(settings, programs_killed, deadline)
    record.restarted_at = max(restarts)
    log.info("fault_restarted parts=%s down_s=%.1f", record.name, record.down_s)
    return record


def newest_row_after(settings: Settings, tag: str, wall: float, first_row: int) -> float | None:
    """Wall time of the first stream row written at or after `wall` (its created_at, the
    writing transaction's start) among the events from `first_row` on, or None. Only events
    sent after the kill count: a batch the killed bridge had queued, landing after the
    restart, says nothing of the new bridge."""
    # As text: task arguments travel as msgpack, which has no datetime.
    since = dt.datetime.fromtimestamp(wall, dt.UTC).replace(tzinfo=None).isoformat()
    table = query_table(
        configure(settings),
        "SELECT min(created_at) AS first FROM features "
        "WHERE created_at >= CAST(? AS TIMESTAMP) AND starts_with(entity_id, ?) "
        f"AND event_timestamp >= {EVENT_TIME_SQL.format(i='?')}",
        [since, tag, first_row],
        timeout=10,
    )
    first = table.column("first")[0].as_py()
    return None if first is None else first.replace(tzinfo=dt.UTC).timestamp()


def wait_recovered(
    settings: Settings, record: KillRecord, traffic: Traffic, tag: str, timeout: float = 300
) -> None:
    """Wait until a stream row lands after the restart and a read and a Predict that began
    after it succeed; sets ingest_stall_s and recovered_at."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.ingest_stall_s is None:
            try:
                landed = newest_row_after(settings, tag, record.restarted_at, record.rows_at_kill)
            except Exception as exc:  # noqa: BLE001 - the service may still be coming back
                log.info("fault_ingest_probe_failed error=%s", type(exc).__name__)
                landed = None
            if landed is not None:
                record.ingest_stall_s = max(0.0, landed - record.restarted_at)
        if (
            record.ingest_stall_s is not None
            and traffic.reads.ok_since(record.restarted_at)
            and traffic.predicts.ok_since(record.restarted_at)
        ):
            record.recovered_at = time.time()
            return
        time.sleep(0.5)
    record.recovered_at = time.time()
    log.error("fault_not_recovered parts=%s timeout_s=%.0f", record.name, timeout)


def landing_times(settings: Settings, tag: str) -> list[float]:
    """Wall times (created_at) of every write of stream rows, in order."""
    table = query_table(
        configure(settings),
        "SELECT DISTINCT epoch(created_at) AS t FROM features WHERE starts_with(entity_id, ?) "
        "ORDER BY t",
        [tag],
        timeout=120,
    )
    return [float(t) for t in table.column("t").to_pylist()]


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch within [start, end] without a landing, edges included."""
    inside = [start, *(t for t in times if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(inside))


def settle(record: KillRecord, traffic: Traffic, end: float) -> None:
    """Close the record's window at `end`: the failures of reads and Predicts within it."""
    record.window_end = end
    record.predict_failed_s, record.predict_errors, predict_kinds = traffic.predicts.failures(
        record.killed_at, end
    )
    record.read_failed_s, record.read_errors, read_kinds = traffic.reads.failures(
        record.killed_at, end
    )
    record.error_kinds = sorted(
        {*(f"predict:{k}" for k in predict_kinds), *(f"read:{k}" for k in read_kinds)}
    )
