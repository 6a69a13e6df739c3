"""Reads under write load, for make bench-read: the latest-features read (and, in turn with
it, `SELECT 1` and a no-op task, as in the idle read) while a producer process feeds Kafka at
a steady rate through the bridge into the DuckDB service; the worker's RSS before and after;
and which of the worker's steps (write_batch, latest_merge, from its log) the slow reads met;
with the worker's trace, where their time went (bench.read_steps).
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psutil
import redis
from confluent_kafka import Producer

from bench.common import bench_settings, latest_catch_up_s, now, percentile
from bench.read_steps import read_steps
from bridge.producer import producer_config
from featurestore import constants, stack
from featurestore.ingest.sources import FileSource
from featurestore.reads.features import latest_features
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import CeleryReader, query_table

log = logging.getLogger("bench.read")

# Events per Kafka message: the size of PushFeatures' and a chatty producer's messages.
ROWS_PER_MESSAGE = 200
SLOW_MS = 15.0  # the p99 target for this read
WORKER = "duckdb-worker"
_STEP_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?\b(write_batch|latest_merge) .*\bms=([\d.]+)"
)


def make_events(path: Path, events: int, entities: int, features: int) -> None:
    """Events updating the loaded entities (so the merger upserts existing rows), newer than
    the loaded history."""
    duckdb.sql(
        f"""COPY (SELECT 'cust_' || ((i // {features}) % {entities}) AS entity_id,
                         'feature_' || (i % {features}) AS feature_name,
                         random() * 100 AS value,
                         TIMESTAMP '2025-01-01' + to_microseconds(i) AS event_timestamp
                  FROM range({events}) t(i)) TO '{path}' (FORMAT parquet)"""
    )


def produce(state_dir: str, events_file: str, rate: float, out: Any) -> None:
    """In a process of its own (so the reader's process keeps its GIL): the file's messages
    into the features topic at `rate` events/s, with the project's producer configuration."""
    settings = bench_settings(Path(state_dir))
    producer = Producer(producer_config(settings, linger_ms=5))
    source = FileSource(Path(events_file), ROWS_PER_MESSAGE)
    began, sent = time.monotonic(), 0
    for message in source.messages():
        while True:
            try:
                producer.produce(settings.features_topic, message.payload)
                break
            except BufferError:
                producer.poll(0.05)
        sent += message.rows
        producer.poll(0)
        time.sleep(max(0.0, began + sent / rate - time.monotonic()))
    elapsed = time.monotonic() - began
    producer.flush(120)
    source.close()
    out.put({"sent": sent, "seconds": elapsed})


def worker_rss_mib(settings: Settings) -> float:
    """VmRSS of the DuckDB service worker (and any child), read from /proc."""
    pid = {p.name: p.pid for p in stack.programs(settings)}[WORKER]
    total = 0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        total += int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
    return total / 1024


def worker_cpu_s(settings: Settings) -> float:
    """CPU seconds the worker has used so far."""
    pid = {p.name: p.pid for p in stack.programs(settings)}[WORKER]
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def sched_s(pid: int) -> tuple[float, float]:
    """Seconds a process's threads have run on a CPU and waited for one (runnable, on a run
    queue), from /proc/<pid>/task/*/schedstat: the second is the machine's share of a
    slow call, whatever the process does."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:  # a thread that ended meanwhile
            continue
        run, wait = run + int(fields[0]), wait + int(fields[1])
    return run / 1e9, wait / 1e9


def count_rows(settings: Settings) -> int:
    """Rows in the features table."""
    table = query_table(configure(settings), "SELECT count(*) AS n FROM features", timeout=60)
    return int(table.column("n")[0].as_py())


@dataclass
class Sample:
    """One call: its kind, wall start and end (epoch seconds), milliseconds."""

    kind: str
    start: float
    end: float
    ms: float


def worker_steps(settings: Settings, since: float) -> dict[str, list[tuple[float, float]]]:
    """(start, end) epoch seconds of each write_batch and latest_merge the worker logged
    since `since` (the log gives each step's end and its ms)."""
    steps: dict[str, list[tuple[float, float]]] = {"write_batch": [], "latest_merge": []}
    logfile = settings.state_dir / "logs" / f"{WORKER}.log"
    for line in logfile.read_text(errors="replace").splitlines():
        found = _STEP_LINE.match(line)
        if not found:
            continue
        stamp = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")
        end = stamp.timestamp()  # asctime is local time, as naive datetimes are read
        if end >= since:
            steps[found.group(2)].append((end - float(found.group(3)) / 1e3, end))
    return steps


def _met(sample: Sample, intervals: list[tuple[float, float]]) -> bool:
    return any(lo < sample.end and sample.start < hi for lo, hi in intervals)


def attribution(
    samples: list[Sample], steps: dict[str, list[tuple[float, float]]]
) -> dict[str, Any]:
    """Of each kind of call, how many met a merge, a write (only), neither, and each
    group's p50/p99 and calls over SLOW_MS (a no-op task that never touches DuckDB slowed
    by a merge points at the worker's process, not DuckDB's locks); and the share of the
    run's time the worker spent in each step."""
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(s.kind for s in samples):
        groups: dict[str, list[float]] = {"merge": [], "write_only": [], "neither": []}
        for sample in (s for s in samples if s.kind == kind):
            if _met(sample, steps["latest_merge"]):
                groups["merge"].append(sample.ms)
            elif _met(sample, steps["write_batch"]):
                groups["write_only"].append(sample.ms)
            else:
                groups["neither"].append(sample.ms)
        prefix = "reads" if kind == "read" else kind
        for name, values in groups.items():
            out[f"{prefix}_meeting_{name}"] = len(values)
            out[f"{prefix}_meeting_{name}_slow"] = sum(v > SLOW_MS for v in values)
            out[f"{prefix}_meeting_{name}_p50_ms"] = round(percentile(values, 0.5), 3)
            out[f"{prefix}_meeting_{name}_p99_ms"] = round(percentile(values, 0.99), 3)
    span = (samples[-1].end - samples[0].start) if samples else 1.0
    for name, intervals in steps.items():
        took = [(hi - lo) * 1e3 for lo, hi in intervals]
        out[f"worker_time_share_{name}"] = round(sum(took) / 1e3 / span, 3)
        out[f"{name}_p50_ms"] = round(percentile(took, 0.5), 1)
        out[f"{name}_max_ms"] = round(max(took, default=0), 1)
    return out


def reads_under_ingest(
    settings: Settings, folder: Path, entity: Any, *, rate: float, seconds: float, shape: Any
) -> dict[str, Any]:
    """Latest reads (with SELECT 1 and a no-op task in turn) during a steady ingest at
    `rate` events/s for `seconds`; the ingest's achieved rate; the worker's RSS growth per
    million events (after the rows are in and merged); and what the slow reads met."""
    entities, features = shape
    events = int(rate * seconds)
    events_file = folder / "under-ingest.parquet"
    make_events(events_file, events, entities, features)
    app = configure(settings)
    ping = redis.Redis.from_url(settings.redis_url)
    calls: dict[str, Callable[[int], object]] = {
        "read": lambda i: latest_features(CeleryReader(app), entity(i)),
        "select1": lambda i: query_table(app, "SELECT 1 AS one"),
        "noop": lambda i: app.send_task(constants.TASK_READ_MANY, args=[[]]).get(timeout=10),
        # No worker at all: this process, Redis and the machine's scheduling.
        "redis_ping": lambda i: ping.ping(),
    }
    rows_before = count_rows(settings)
    rss_before = worker_rss_mib(settings)
    cpu_before = worker_cpu_s(settings)
    worker_pid = {p.name: p.pid for p in stack.programs(settings)}[WORKER]
    sched_before = {"worker": sched_s(worker_pid), "reader": sched_s(os.getpid())}
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    producer = context.Process(
        target=produce, args=(str(settings.state_dir), str(events_file), rate, out), daemon=True
    )
    began_wall, began = time.time(), now()
    producer.start()
    samples: list[Sample] = []
    i = 0
    while producer.is_alive():
        for kind, call in calls.items():
            start = time.time()
            tick = time.perf_counter()
            call(i)
            samples.append(Sample(kind, start, time.time(), (time.perf_counter() - tick) * 1e3))
        i += 1
    window = now() - began
    sched = {
        name: [b - a for a, b in zip(sched_before[name], sched_s(pid), strict=True)]
        for name, pid in (("worker", worker_pid), ("reader", os.getpid()))
    }
    report = out.get(timeout=30)
    producer.join(timeout=30)
    rows_in_window = count_rows(settings) - rows_before
    cpu_share = (worker_cpu_s(settings) - cpu_before) / window
    load_average = os.getloadavg()[0]
    deadline = now() + 600
    while count_rows(settings) - rows_before < report["sent"]:
        if now() > deadline:
            raise TimeoutError("the ingest under reads did not land within 600 s")
        time.sleep(0.5)
    latest_catch_up_s(settings)
    rss_after = worker_rss_mib(settings)
    by_kind = {k: [s.ms for s in samples if s.kind == k] for k in calls}
    reads = [s for s in samples if s.kind == "read"]
    result: dict[str, Any] = {
        "read_under_ingest_p50_ms": percentile(by_kind["read"], 0.5),
        "read_under_ingest_p99_ms": percentile(by_kind["read"], 0.99),
        "read_under_ingest_max_ms": max(by_kind["read"]),
        "read_under_ingest_count": len(reads),
        "select1_under_ingest_p50_ms": percentile(by_kind["select1"], 0.5),
        "select1_under_ingest_p99_ms": percentile(by_kind["select1"], 0.99),
        "noop_under_ingest_p50_ms": percentile(by_kind["noop"], 0.5),
        "noop_under_ingest_p99_ms": percentile(by_kind["noop"], 0.99),
        "ingest_rate_target": rate,
        "ingest_rate_produced": report["sent"] / report["seconds"],
        "ingest_rate_during_reads": rows_in_window / window,
        "ingest_events": report["sent"],
        "worker_cpu_share_during_reads": cpu_share,
        "load_average_1m_during_reads": load_average,
        "redis_ping_under_ingest_p50_ms": percentile(by_kind["redis_ping"], 0.5),
        "redis_ping_under_ingest_p99_ms": percentile(by_kind["redis_ping"], 0.99),
        # Seconds runnable but waiting for a CPU per second on one: ~0 on an idle machine.
        "worker_cpu_wait_per_cpu_s": sched["worker"][1] / max(sched["worker"][0], 1e-9),
        "reader_cpu_wait_per_cpu_s": sched["reader"][1] / max(sched["reader"][0], 1e-9),
        "worker_rss_before_mib": rss_before,
        "worker_rss_after_mib": rss_after,
        "worker_rss_growth_mib_per_million_events": (rss_after - rss_before)
        / (report["sent"] / 1e6),
    }
    steps = worker_steps(settings, began_wall)
    result.update(attribution(samples, steps))
    if settings.read_trace_file is not None:
        result.update(read_steps(settings.read_trace_file, samples, steps["latest_merge"]))
    return result
