"""Entry point of the model-sync worker: its own queue, one task at a time, its own metrics
port. Artifact downloads run here, never in the DuckDB service."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

import redis
from azure.storage.blob import BlobServiceClient
from celery import bootsteps

from featurestore import metrics, services
from featurestore.reads.reader import Reader
from featurestore.serving import artifacts
from featurestore.serving import sync as _sync  # noqa: F401 - loaded at start-up, not per task
from featurestore.settings import Settings
from tasks.app import app, configure
from tasks.client.query import CeleryReader
from tasks.model_sync_tasks import ModelSyncTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncResources:
    """What the sync uses, made once per worker at start-up."""

    reader: Reader
    blobs: BlobServiceClient
    client: redis.Redis
    settings: Settings

    def close(self) -> None:
        """Close the Azure and Redis clients."""
        self.blobs.close()
        self.client.close()


def sync_resources_step(settings: Settings) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that makes the sync's resources as the worker starts and closes
    them as it stops, for these settings."""

    class SyncResourcesStep(bootsteps.StartStopStep):  # type: ignore[misc]
        """Owns the Reader, Azure and Redis clients for the life of the worker."""

        # After the pool, before the consumer: no task arrives before they exist.
        requires = ("celery.worker.components:Pool",)

        def start(self, worker: Any) -> None:
            ModelSyncTask.attach(
                SyncResources(
                    reader=CeleryReader(app, timeout=settings.query_timeout_s),
                    blobs=artifacts.blob_client(settings),
                    client=redis.Redis.from_url(settings.redis_url, socket_timeout=30),
                    settings=settings,
                )
            )

        def stop(self, worker: Any) -> None:
            resources = ModelSyncTask.attach(None)
            if resources is not None:
                resources.close()

    return SyncResourcesStep


def run_model_sync(settings: Settings) -> None:
    """Serve the model-sync queue, one task at a time in this process (solo pool)."""
    services.ensure_redis(settings)
    configure(settings)
    metrics.serve(settings.metrics_port_model_sync, "model_sync", settings.metrics_host)
    app.steps["worker"].add(sync_resources_step(settings))
    log.info("model_sync_worker_start queue=%s", settings.model_sync_queue)
    app.worker_main(
        argv=[
            "worker",
            "--loglevel=INFO",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={settings.model_sync_queue}",
            f"--hostname=model-sync@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            "--task-events",
        ]
    )
