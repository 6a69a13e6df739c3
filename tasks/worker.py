"""Entry point of the DuckDB service worker: the only process that opens the DuckDB file."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import redis
from celery import bootsteps

from featurestore import constants, metrics, services
from featurestore.constants import WRITER_EPOCH_KEY
from featurestore.logs import quoted
from featurestore.settings import Settings
from featurestore.store.service import DuckDBService
from tasks import monitor, read_trace, thread_pool
from tasks.app import app, configure
from tasks.duckdb_tasks import DuckDBTask

log = logging.getLogger(__name__)


def duckdb_service_step(settings: Settings) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that opens the DuckDB service as the worker starts and closes it as
    the worker stops, for these settings."""

    class DuckDBServiceStep(bootsteps.StartStopStep):  # type: ignore[misc]
        """Owns the DuckDB service for the life of the worker."""

        # After the pool, before the consumer: no task arrives before the file is open.
        requires = ("celery.worker.components:Pool",)

        def start(self, worker: Any) -> None:
            # Set for the whole process, before any task runs (README, reads under write load).
            sys.setswitchinterval(settings.worker_switch_interval_ms / 1e3)
            client = redis.Redis.from_url(settings.redis_url)
            service = DuckDBService(settings, client)
            DuckDBTask.attach(service)
            read_trace.install(settings.read_trace_file, service)
            epoch = f"{os.getpid()}-{time.time_ns()}"
            client.set(WRITER_EPOCH_KEY, epoch)
            log.info("writer_epoch epoch=%s", epoch)

        def stop(self, worker: Any) -> None:
            # Steps stop in reverse order, so the pool would stop after this one: drain it
            # first, so that a running write commits before the file closes.
            worker.pool.stop()
            service = DuckDBTask.attach(None)
            if service is not None:
                service.close()
                log.info("worker_stop duckdb=%s", quoted(settings.duckdb_file))

        # A cold shutdown too lets a running write commit, as the pool's exit hook does.
        terminate = stop

    return DuckDBServiceStep


def run_worker(settings: Settings) -> None:
    """Serve the write and read queues with a thread pool; the DuckDB service opens and
    closes with the worker (duckdb_service_step)."""
    services.ensure_redis(settings)
    configure(settings)
    metrics.serve(settings.metrics_port_worker, "duckdb_worker", settings.metrics_host)
    app.steps["worker"].add(duckdb_service_step(settings))
    # One line per task at hundreds of reads a second, with the result bytes in it, drowns
    # the log; the service logs its own events (write_batch, registry_change, ...).
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    log.info(
        "worker_start duckdb=%s queues=%s,%s threads=%d pool=%s grouping=%s result_store=%s "
        "switch_interval_ms=%s write_threads=%d",
        quoted(settings.duckdb_file),
        settings.write_queue,
        settings.read_queue,
        settings.read_threads,
        settings.worker_pool,
        settings.read_grouping,
        settings.read_result_store,
        settings.worker_switch_interval_ms,
        settings.worker_write_threads,
    )
    # Celery's thread pool with its idle threads taken last-in first-out (tasks.thread_pool),
    # or Celery's own; a pool class is given by setting, --pool knows only Celery's names.
    app.conf.worker_pool = (
        "tasks.thread_pool:TaskPool" if settings.worker_pool == "last_idle" else "threads"
    )
    app.conf[thread_pool.WRITE_TASKS_SETTING] = [
        constants.TASK_WRITE_BATCH,
        constants.TASK_WRITE_PREDICTIONS,
    ]
    app.conf[thread_pool.WRITE_THREADS_SETTING] = settings.worker_write_threads
    app.conf[thread_pool.WRITE_NICE_SETTING] = settings.worker_write_nice
    app.worker_main(
        argv=[
            "worker",
            "--loglevel=INFO",
            f"--concurrency={settings.read_threads + 1}",
            f"--queues={settings.write_queue},{settings.read_queue}",
            f"--hostname=duckdb@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            "--task-events",
        ]
    )


def run_beat(settings: Settings) -> None:
    """Run Celery beat with its schedule file in the state folder."""
    services.ensure_redis(settings)
    configure(settings)
    metrics.serve(settings.metrics_port_beat, "beat", settings.metrics_host)
    # Queue lengths and consumer lag, sampled beside the schedule until the process exits.
    monitor.start(settings, threading.Event())
    schedule = settings.run_dir / "celerybeat-schedule"
    app.start(argv=["beat", "--loglevel=INFO", f"--schedule={schedule}"])


def run_flower(settings: Settings) -> None:
    """Run Flower on the configured port."""
    services.ensure_redis(settings)
    configure(settings)
    # Its UI and HTTP API (which can also revoke tasks and shut workers down) ask for basic
    # auth, given in the environment, where `ps` does not show it; /metrics stays open to
    # Prometheus, on loopback like the rest.
    os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth()
    app.start(argv=["flower", f"--port={settings.flower_port}", "--address=127.0.0.1"])
