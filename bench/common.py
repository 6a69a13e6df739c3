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

from bench import stale
from featurestore import services, stack
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import query_table

PROJECT = Path(__file__).resolve().parents[1]


def bench_settings(state_dir: Path, **overrides: object) -> Settings:
    """Settings for a benchmark stack on ports of its own (offset 1000 from the defaults,
    plus FSTORE_BENCH_PORT_OFFSET so that two benchmarks can run side by side)."""
    base = Settings()
    shift = int(os.environ.get("FSTORE_BENCH_PORT_OFFSET", "0"))
    azure_port = 11000 + shift
    values: dict[str, object] = {
        "state_dir": state_dir,
        "tools_path": PROJECT / ".state" / "tools",
        "kafka_bootstrap": f"localhost:{10092 + shift}",
        "kafka_controller_port": 10093 + shift,
        "redis_url": f"redis://localhost:{7379 + shift}/0",
        "azure_connection_string": base.azure_connection_string.replace(
            ":10000/", f":{azure_port}/"
        ),
        "grpc_port": 51051 + shift,
        "flower_port": 6555 + shift,
        "metrics_port_worker": 10101 + shift,
        "metrics_port_bridge": 10102 + shift,
        "metrics_port_grpc": 10103 + shift,
        "metrics_port_grpc_extra": 10106 + shift,
        "metrics_port_beat": 10104 + shift,
        "metrics_port_model_sync": 10105 + shift,
        "prometheus_port": 10090 + shift,
        "alertmanager_port": 10094 + shift,
        "redis_exporter_port": 10121 + shift,
        # Its last two digits are no other base's: offsets 300 apart once collided.
        "kafka_jmx_exporter_port": 10447 + shift,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def running_stack(settings: Settings) -> Iterator[Settings]:
    """Backing services and the supervisord stack, stopped afterwards, also when one of
    them fails to start (a service left answering would serve the next run), on SIGTERM
    and Ctrl-C; a stack left by a benchmark killed with SIGKILL is stopped first."""
    stale.stop_stale(settings)
    with stale.install_stop_signals() as stopping:
        marker = stale.write_marker(settings)
        try:
            services.ensure_all(settings)
            stack.up(settings)
            yield settings
        finally:
            stopping.set()  # a SIGTERM or Ctrl-C from now on must not cut the stop short
            stack.down(settings)
            marker.unlink(missing_ok=True)


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


BATCH_PROGRAMS = ("duckdb-worker", "bridge")


def settle(settings: Settings, idle_cores: float = 0.1, timeout: float = 180) -> float:
    """Seconds until the stack has digested what came before: the latest-values table
    caught up, then the DuckDB worker and the bridge each under `idle_cores` of CPU for two
    seconds in a row. A bulk load's merge and checkpoint, or the prediction log's records of
    an earlier phase, otherwise land in the next phase's serving figures."""
    began = time.monotonic()
    latest_catch_up_s(settings, timeout)
    processes = [
        psutil.Process(p.pid) for p in stack.programs(settings) if p.name in BATCH_PROGRAMS
    ]

    def cpu() -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in processes]

    quiet = 0
    while quiet < 2 and time.monotonic() - began < timeout:
        before = cpu()
        time.sleep(1.0)
        busy = any(b - a >= idle_cores for a, b in zip(before, cpu(), strict=True))
        quiet = 0 if busy else quiet + 1
    return time.monotonic() - began


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
