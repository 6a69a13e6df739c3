"""Shared pieces of the benchmarks: an isolated stack, percentiles, RSS sampling."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from featurestore import services, stack
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import query_table

PROJECT = Path(__file__).resolve().parents[1]


def bench_settings(state_dir: Path, **overrides: object) -> Settings:
    """Settings for a benchmark stack on ports of its own (offset 1000 from the defaults)."""
    base = Settings()
    values: dict[str, object] = {
        "state_dir": state_dir,
        "tools_path": PROJECT / ".state" / "tools",
        "kafka_bootstrap": "localhost:10092",
        "kafka_controller_port": 10093,
        "redis_url": "redis://localhost:7379/0",
        "azure_connection_string": base.azure_connection_string.replace(":10000/", ":11000/"),
        "grpc_port": 51051,
        "flower_port": 6555,
        "metrics_port_worker": 10101,
        "metrics_port_bridge": 10102,
        "metrics_port_grpc": 10103,
        "metrics_port_beat": 10104,
        "metrics_port_model_sync": 10105,
        "prometheus_port": 10090,
        "alertmanager_port": 10094,
        "redis_exporter_port": 10121,
        "kafka_jmx_exporter_port": 10404,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def running_stack(settings: Settings) -> Iterator[Settings]:
    """Backing services and the supervisord stack, stopped afterwards, also when one of
    them fails to start (a service left answering would serve the next run)."""
    try:
        services.ensure_all(settings)
        stack.up(settings)
        yield settings
    finally:
        stack.down(settings)


def latest_catch_up_s(settings: Settings, timeout: float = 900) -> float:
    """Seconds until the latest-values table has caught up with every row written."""
    app = configure(settings)
    began = now()
    while now() - began < timeout:
        table = query_table(
            app,
            "SELECT (SELECT max(created_at) FROM features) = "
            "(SELECT merged_through FROM latest_state) AS caught_up",
            timeout=60,
        )
        if table.column("caught_up")[0].as_py():
            return now() - began
        time.sleep(0.2)
    raise TimeoutError(f"the latest-values table did not catch up within {timeout:.0f}s")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, by linear interpolation."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


class RssSampler:
    """Samples the peak resident memory (MiB) of supervisord programs, children included."""

    def __init__(self, settings: Settings, names: list[str], every_s: float = 0.2) -> None:
        self.settings = settings
        self.names = names
        self.every_s = every_s
        self.peak_mib: dict[str, float] = dict.fromkeys(names, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, pid: int) -> float:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs) / 2**20
        except psutil.Error:
            return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = {p.name: p.pid for p in stack.programs(self.settings)}
            for name in self.names:
                if pids.get(name):
                    self.peak_mib[name] = max(self.peak_mib[name], self._rss(pids[name]))
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_count() -> int:
    """Cores available to this process."""
    return len(os.sched_getaffinity(0))


def now() -> float:
    """Monotonic seconds."""
    return time.monotonic()
