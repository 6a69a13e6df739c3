"""Entry point of the DuckDB service worker: the only process that opens the DuckDB file."""

from __future__ import annotations

import logging
import socket

import redis

from featurestore import metrics, services
from featurestore.settings import Settings
from featurestore.store.service import DuckDBService
from tasks import duckdb_tasks
from tasks.app import app, configure

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Open DuckDB, then serve the write and read queues with a thread pool."""
    services.ensure_redis(settings)
    configure(settings)
    metrics.serve(settings.metrics_port_worker, "duckdb_worker")
    service = DuckDBService(settings, redis.Redis.from_url(settings.redis_url))
    duckdb_tasks.install(service)
    # One line per task at hundreds of reads a second, with the result bytes in it, drowns
    # the log; the service logs its own events (write_batch, registry_change, ...).
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    log.info(
        "worker_start duckdb=%s queues=%s,%s threads=%d",
        settings.duckdb_file,
        settings.write_queue,
        settings.read_queue,
        settings.read_threads,
    )
    # Celery's thread pool with its idle threads taken last-in first-out (tasks.thread_pool);
    # a pool class is given by setting, the --pool option knows only Celery's own names.
    app.conf.worker_pool = "tasks.thread_pool:TaskPool"
    try:
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
    finally:
        service.close()
        log.info("worker_stop duckdb=%s", settings.duckdb_file)


def run_beat(settings: Settings) -> None:
    """Run Celery beat with its schedule file in the state folder."""
    services.ensure_redis(settings)
    configure(settings)
    metrics.serve(settings.metrics_port_beat, "beat")
    schedule = settings.run_dir / "celerybeat-schedule"
    app.start(argv=["beat", "--loglevel=INFO", f"--schedule={schedule}"])


def run_flower(settings: Settings) -> None:
    """Run Flower on the configured port."""
    services.ensure_redis(settings)
    configure(settings)
    app.start(argv=["flower", f"--port={settings.flower_port}", "--address=0.0.0.0"])
