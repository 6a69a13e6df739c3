"""Tasks of the model-sync worker: thin wrappers around featurestore.serving.sync.

Every worker imports this module (tasks.app's include). The sync and ONNX Runtime are
imported only where the task runs, the model-sync worker: imported here they would add tens
of MiB to the DuckDB service's RSS (measured after import; README, Benchmarks), which never syncs.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

from celery import Task

from featurestore import constants
from featurestore.errors import ServiceError
from tasks.app import app

if TYPE_CHECKING:
    from tasks.model_sync_worker import SyncResources


class ModelSyncTask(Task):  # type: ignore[misc]  # celery has no type hints
    """Base of the sync task: `resources` are the ones this worker made at start-up
    (tasks.model_sync_worker.sync_resources_step)."""

    _resources: ClassVar[SyncResources | None] = None

    @classmethod
    def attach(cls, resources: SyncResources | None) -> SyncResources | None:
        """Give (or, with None, take back) this process's resources; returns the previous."""
        previous, cls._resources = cls._resources, resources
        return previous

    @property
    def resources(self) -> SyncResources:
        """This worker's Reader, Azure and Redis clients; a clear error anywhere else."""
        if self._resources is None:
            raise ServiceError(
                "models are synced only by the model-sync worker (`fstore model-sync`)"
            )
        return self._resources


@app.task(name=constants.TASK_SYNC_MODELS, base=ModelSyncTask, bind=True)
def sync_models(self: ModelSyncTask) -> dict[str, Any]:
    """Copy the production models' artifacts from Azure Blob Storage into Redis; fails when
    Azure could not be listed (nothing served was removed then)."""
    from featurestore.serving import sync  # see the module docstring

    r = self.resources
    report = sync.sync_models(r.reader, r.blobs, r.client, r.settings)
    if report.azure_unreachable:
        raise ServiceError(
            "model sync incomplete: Azure Blob Storage could not be listed for "
            + ", ".join(m for m, reason in report.failed.items() if reason == "azure_unreachable")
        )
    return asdict(report)
