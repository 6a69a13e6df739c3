"""Tasks served by the DuckDB service worker: thin wrappers around featurestore.store.service."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient
from celery import Task

from featurestore import constants, metrics
from featurestore.errors import ServiceError
from featurestore.serving import sync as model_sync
from featurestore.store import training
from featurestore.store.database import OffsetSpan
from featurestore.store.service import DuckDBService
from tasks.app import app

_service: DuckDBService | None = None


def install(service: DuckDBService) -> None:
    """Give this process's tasks the DuckDB service (called once, by the worker entry point)."""
    global _service  # noqa: PLW0603 - one per process, set at start-up
    _service = service


def _require() -> DuckDBService:
    if _service is None:
        raise ServiceError(
            "this worker does not own the DuckDB file: DuckDB tasks run only in `fstore worker`"
        )
    return _service


@app.task(name=constants.TASK_PING)
def ping() -> dict[str, Any]:
    """Answer with the worker's pid, DuckDB path and row count."""
    service = _require()
    return {"pid": os.getpid(), "duckdb": str(service.store.path), "rows": service.row_count()}


# A write taken by a worker that is then killed is gone from Redis (the broker runs without
# ack emulation, see tasks.app): the bridge resends every batch whose result does not come
# back, and the writer skips what an earlier delivery already committed.
@app.task(name=constants.TASK_WRITE_BATCH)
def write_features_batch(
    payload: bytes, topic: str, partition: int, first_offset: int, last_offset: int
) -> dict[str, int]:
    """Write one Arrow IPC batch of feature rows exactly once."""
    span = OffsetSpan(topic, partition, first_offset, last_offset)
    return asdict(_require().write_batch(payload, span))


@app.task(name=constants.TASK_REGISTRY_CHANGE)
def registry_change(operation: str, arguments: dict[str, Any]) -> None:
    """Register, promote or archive a model version in model_metadata."""
    _require().change_registry(operation, arguments)


@app.task(name=constants.TASK_TRAINING_SET, bind=True)
def training_set(
    self: Task, spine: str, features: list[str], max_age_s: dict[str, float], output: str
) -> dict[str, Any]:
    """Build a point-in-time training set as Parquet; progress in the task's state."""
    request = training.TrainingRequest(
        spine_path=Path(spine),
        features=features,
        output_path=Path(output),
        max_age={name: dt.timedelta(seconds=s) for name, s in max_age_s.items()},
    )

    def progress(done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"done": done, "total": total})

    return asdict(_require().build_training_set(request, progress))


# Reads send no task events: at hundreds a second their three events each cost a third of
# the worker's time per read. fstore_reads_total and fstore_read_seconds count them instead.
@app.task(name=constants.TASK_READ_MANY, send_events=False)
def read_many(requests: list[tuple[str, Any]]) -> list[bytes | tuple[str, str]]:
    """Run several reads; each gives its result's bytes or (error type, DuckDB's message)."""
    return _require().read_many(requests)


@app.task(name=constants.TASK_RESUME_OFFSET)
def resume_offset(topic: str, partition: int, committed: int) -> int:
    """First offset of the partition not yet committed to DuckDB."""
    return _require().resume_offset(topic, partition, committed)


@app.task(name=constants.TASK_REBUILD_ONLINE)
def rebuild_online() -> int:
    """Recompute the online store from DuckDB; returns the (entity, feature) pairs written."""
    return _require().rebuild_online()


@app.task(name=constants.TASK_SYNC_MODELS)
def sync_models() -> dict[str, list[str]]:
    """Copy the production models' artifacts from Azure Blob Storage into Redis."""
    service = _require()
    try:
        with BlobServiceClient.from_connection_string(
            service.settings.azure_connection_string
        ) as blobs:
            report = model_sync.sync_models(service.store.cursor(), blobs, service.online.client)
    except Exception:
        metrics.MODEL_SYNC.labels("failed").inc()
        raise
    metrics.MODEL_SYNC.labels("ok").inc()
    return asdict(report)
