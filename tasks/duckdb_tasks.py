"""Tasks served by the DuckDB service worker: thin wrappers around featurestore.store.service."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from celery import Task

from featurestore import constants
from featurestore.errors import ServiceError
from featurestore.store import backup, skew, training
from featurestore.store.database import OffsetSpan, WriteResult
from featurestore.store.service import DuckDBService
from tasks.app import app


class DuckDBTask(Task):  # type: ignore[misc]  # celery has no type hints
    """Base of the DuckDB service's tasks: `service` is the one this worker opened at start-up
    (tasks.worker.DuckDBServiceStep); Celery keeps one instance of a task per process."""

    _service: ClassVar[DuckDBService | None] = None

    @classmethod
    def attach(cls, service: DuckDBService | None) -> DuckDBService | None:
        """Give (or, with None, take back) this process's DuckDB service; returns the one
        it replaces."""
        previous, cls._service = cls._service, service
        return previous

    @property
    def service(self) -> DuckDBService:
        """The DuckDB service of this worker; a clear error anywhere else."""
        if self._service is None:
            raise ServiceError(
                "this worker does not own the DuckDB file: DuckDB tasks run only in `fstore worker`"
            )
        return self._service


@app.task(name=constants.TASK_PING, base=DuckDBTask, bind=True)
def ping(self: DuckDBTask) -> dict[str, Any]:
    """Answer with the worker's pid, DuckDB path and row count."""
    service = self.service
    return {"pid": os.getpid(), "duckdb": str(service.store.path), "rows": service.row_count()}


def _write_task(
    name: str, write: Callable[[DuckDBService, bytes, OffsetSpan], WriteResult], doc: str
) -> Any:
    """Register the task `name` that writes one batch (its offsets as a span) with `write`."""

    def task(
        self: DuckDBTask,
        payload: bytes,
        topic: str,
        partition: int,
        first_offset: int,
        last_offset: int,
    ) -> dict[str, int]:
        span = OffsetSpan(topic, partition, first_offset, last_offset)
        return asdict(write(self.service, payload, span))

    task.__doc__ = doc
    return app.task(name=name, base=DuckDBTask, bind=True)(task)


# A write taken by a worker that is then killed is gone from Redis (the broker runs without
# ack emulation, see tasks.app): the bridge resends every batch whose result does not come
# back, and the writer skips what an earlier delivery already committed.
write_features_batch = _write_task(
    constants.TASK_WRITE_BATCH,
    DuckDBService.write_batch,
    "Write one Arrow IPC batch of feature rows exactly once.",
)
write_predictions_batch = _write_task(
    constants.TASK_WRITE_PREDICTIONS,
    DuckDBService.write_predictions,
    "Write one Arrow IPC batch of prediction records into prediction_log exactly once.",
)


@app.task(name=constants.TASK_REGISTRY_CHANGE, base=DuckDBTask, bind=True)
def registry_change(self: DuckDBTask, operation: str, arguments: dict[str, Any]) -> None:
    """Register, promote or archive a model version in model_metadata."""
    self.service.change_registry(operation, arguments)


@app.task(name=constants.TASK_TRAINING_SET, bind=True, base=DuckDBTask)
def training_set(
    self: DuckDBTask, spine: str, features: list[str], max_age_s: dict[str, float], output: str
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

    return asdict(self.service.build_training_set(request, progress))


@app.task(name=constants.TASK_TRAINING_SET_FROM_LOG, bind=True, base=DuckDBTask)
def training_set_from_log(
    self: DuckDBTask, spine: str, model_id: str, output: str
) -> dict[str, Any]:
    """Build a training set of the values a model was served, labels from the spine."""
    request = training.LogTrainingRequest(Path(spine), model_id, Path(output))
    return asdict(self.service.build_training_set_from_log(request))


@app.task(name=constants.TASK_SKEW, bind=True, base=DuckDBTask)
def skew_report(
    self: DuckDBTask, model_id: str, since: str | None, until: str | None, output: str | None
) -> dict[str, Any]:
    """Training-serving skew of a model's logged predictions (ISO-8601 range, UTC)."""
    request = skew.SkewRequest(
        model_id,
        None if since is None else skew.parse_time(since),
        None if until is None else skew.parse_time(until),
        None if output is None else Path(output),
    )
    return asdict(self.service.skew(request))


# Reads send no task events: at hundreds a second their three events took a large share of
# the worker's time per read (README, Benchmarks: read path). fstore_reads_total and
# fstore_read_seconds count them instead.
@app.task(name=constants.TASK_READ_MANY, send_events=False, base=DuckDBTask, bind=True)
def read_many(self: DuckDBTask, requests: list[tuple[str, Any]]) -> list[bytes | tuple[str, str]]:
    """Run several reads, each (sql, params) or (sql, params, deadline in time.time()
    seconds); each gives its result's bytes or (error type, message)."""
    return self.service.read_many(requests)


@app.task(name=constants.TASK_RESUME_OFFSET, base=DuckDBTask, bind=True)
def resume_offset(self: DuckDBTask, topic: str, partition: int, committed: int) -> int:
    """First offset of the partition not yet committed to DuckDB."""
    return self.service.resume_offset(topic, partition, committed)


@app.task(name=constants.TASK_REBUILD_ONLINE, base=DuckDBTask, bind=True)
def rebuild_online(self: DuckDBTask) -> int:
    """Recompute the online store from DuckDB; returns the (entity, feature) pairs written."""
    return self.service.rebuild_online()


@app.task(name=constants.TASK_BACKUP, bind=True, base=DuckDBTask)
def backup_database(
    self: DuckDBTask, dest: str, committed: list[tuple[str, int, int]]
) -> dict[str, Any]:
    """Copy the database into the folder dest in one snapshot (featurestore.store.backup);
    committed: the bridge group's (topic, partition, offset); progress in the task's state."""

    def progress(done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"done": done, "total": total})

    service = self.service
    manifest = backup.take(
        service.store,
        Path(dest),
        {(topic, partition): offset for topic, partition, offset in committed},
        progress,
        state_dir=service.settings.state_dir,
    )
    return asdict(manifest)
