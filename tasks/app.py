"""The Celery app, configured from the settings at each program's start-up.

Task modules are listed in `include` and imported by the worker, never from here,
so this module imports no task module. Nothing here opens a connection.
"""

from __future__ import annotations

from celery import Celery

from featurestore import constants
from featurestore.settings import Settings
from tasks.result_backend import backend_url

app = Celery("featurestore", include=["tasks.duckdb_tasks", "tasks.model_sync_tasks"])


def configure(settings: Settings) -> Celery:
    """Point the app at the settings' Redis and queues (once per process, at start-up)."""
    app.conf.update(
        broker_url=settings.redis_url,
        result_backend=backend_url(settings.redis_url)
        if settings.read_result_store == "one_trip"
        else settings.redis_url,
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack", "json"],
        task_routes={
            constants.TASK_WRITE_BATCH: {"queue": settings.write_queue},
            constants.TASK_REGISTRY_CHANGE: {"queue": settings.write_queue},
            constants.TASK_PING: {"queue": settings.read_queue},
            constants.TASK_READ_MANY: {"queue": settings.read_queue},
            constants.TASK_RESUME_OFFSET: {"queue": settings.read_queue},
            constants.TASK_SYNC_MODELS: {"queue": settings.model_sync_queue},
            constants.TASK_REBUILD_ONLINE: {"queue": settings.read_queue},
            constants.TASK_TRAINING_SET: {"queue": settings.read_queue},
            constants.TASK_WRITE_PREDICTIONS: {"queue": settings.write_queue},
            constants.TASK_SKEW: {"queue": settings.read_queue},
            constants.TASK_TRAINING_SET_FROM_LOG: {"queue": settings.read_queue},
            # A snapshot, not serialised with writes (featurestore.store.backup).
            constants.TASK_BACKUP: {"queue": settings.read_queue},
        },
        task_default_queue="celery",
        # No ack emulation: a message is gone from Redis once a worker takes it. Emulation
        # keeps every message in an "unacked" hash until acknowledged, two more Redis round
        # trips per task (a large share of a trivial task's worker time: README,
        # Benchmarks), and gives it back only after a visibility timeout. Nothing relies on
        # it: the bridge resends a write batch that gets no result (the writer skips what it
        # already committed), and every other caller waits for its result and gets a
        # timeout error instead.
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        broker_transport_options={"ack_emulation": False},
        # Results are read within seconds (the bridge polls, readers wait on pub/sub);
        # expiring them soon bounds Redis memory without a DEL per read.
        result_expires=300,
        # Up to 50 reader threads per process publish at once; the default pool of 10
        # producers made them queue for a connection.
        broker_pool_limit=64,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sync-models": {
                "task": constants.TASK_SYNC_MODELS,
                "schedule": settings.model_sync_interval_s,
                # The next one supersedes it: none pile up while the model-sync worker is down.
                "options": {"expires": settings.model_sync_interval_s},
            },
        },
    )
    return app
