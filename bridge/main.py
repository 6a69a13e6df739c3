"""Entry point of the bridge: runs the consumer loop, restarting it on connection loss."""

from __future__ import annotations

import gc
import logging
import signal
import socket
import threading

import redis

from bridge.consumer import Bridge
from featurestore import metrics, services
from featurestore.constants import WRITER_EPOCH_KEY
from featurestore.settings import Settings
from tasks.app import configure

log = logging.getLogger(__name__)


def instance_id(settings: Settings) -> str:
    """The bridge's static group member id: the setting, else one per group and host."""
    return settings.bridge_instance_id or f"{settings.consumer_group}-{socket.gethostname()}"


def writer_epoch(client: redis.Redis) -> str | None:
    """The DuckDB service worker's current epoch (tasks.worker sets one each start) and the
    Redis server's run id, None before the worker set one: a change of either means that
    results of tasks in flight may never come."""
    # A worker that ran a write while Redis restarted could not store its result, and the
    # commits waited behind that batch until the 120 s resend (found restarting Redis under
    # PushFeatures; the epoch key itself survives in the append-only file).
    pipe = client.pipeline(transaction=False)
    pipe.get(WRITER_EPOCH_KEY)
    pipe.info("server")
    raw, info = pipe.execute()
    if raw is None:
        return None
    epoch = raw.decode() if isinstance(raw, bytes) else str(raw)
    return f"{epoch}@{info['run_id']}"


# Young collections this many allocations apart, not CPython's 700: an open prediction batch
# holds a few dicts and lists per record until it is sent, and the collector walked them
# again and again (perf: a seventh of the bridge's CPU at 500 records/s).
GC_YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """Set the bridge's garbage collector, once start-up is done (README, Prediction log)."""
    # Start-up's objects (modules, Celery's and Kafka's) go to the permanent generation:
    # older collections stop walking them. The bridge's _take and encode of 1-entity records
    # 21-31 against 31-46 us a record offline; in the stack (bench.serve_tail, runs in turn,
    # load 8-23) 0.048-0.062 CPU-s per 1k records (median 0.051) against 0.051-0.062 (0.059).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def run_bridge(settings: Settings) -> None:
    """Consume the features and predictions topics until SIGTERM; on a failure log, close,
    wait, restart."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    services.ensure_redis(settings)
    services.ensure_kafka(settings)
    app = configure(settings)
    client = redis.Redis.from_url(settings.redis_url)
    metrics.serve(settings.metrics_port_bridge, "bridge", settings.metrics_host)
    tune_collector()
    backoff = 1.0
    while not stop.is_set():
        log.info(
            "bridge_start topics=%s,%s group=%s",
            settings.features_topic,
            settings.predictions_topic,
            settings.consumer_group,
        )
        try:
            Bridge(
                settings,
                app,
                stop,
                instance_id=instance_id(settings),
                writer_epoch=lambda: writer_epoch(client),
            ).run()
            backoff = 1.0
        except Exception:
            metrics.FAILURES.labels("bridge", "crash").inc()
            log.exception("bridge_crashed restart_in_s=%.0f", backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
    log.info("bridge_stop")
