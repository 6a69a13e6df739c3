"""Model sync: production rows of model_metadata -> Azure Blob artifacts -> Redis."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import duckdb
import redis
from azure.storage.blob import BlobServiceClient

from featurestore.constants import PROD_MODELS_KEY, model_artifact_key
from featurestore.store.online import as_text

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    """What one sync did: models now served, artifacts copied, models dropped."""

    served: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def production_models(cur: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """model_id -> container, for every model with a production row."""
    rows = cur.execute(
        "SELECT DISTINCT model_id, azure_location FROM model_metadata "
        "WHERE status = 'production' ORDER BY model_id"
    ).fetchall()
    return {str(model_id): str(container) for model_id, container in rows}


def is_production_artifact(blob_name: str, model_id: str) -> bool:
    """True for '<model_id>/<name>production.<ext>': the production artifacts of a model."""
    path = PurePosixPath(blob_name)
    return path.parent.name == model_id and path.stem.endswith("production") and bool(path.suffix)


def _artifact_keys(client: redis.Redis, model_id: str) -> list[str]:
    return [as_text(k) for k in client.scan_iter(match=model_artifact_key(model_id, "*"))]


def sync_models(
    cur: duckdb.DuckDBPyConnection, blobs: BlobServiceClient, client: redis.Redis
) -> SyncReport:
    """Copy the production artifacts of every production model into Redis."""
    report = SyncReport()
    wanted = production_models(cur)
    for model_id, container in wanted.items():
        container_client = blobs.get_container_client(container)
        by_extension: dict[str, list[str]] = {}
        for blob in container_client.list_blobs(name_starts_with=f"{model_id}/"):
            if is_production_artifact(blob.name, model_id):
                extension = PurePosixPath(blob.name).suffix.lstrip(".")
                by_extension.setdefault(extension, []).append(blob.name)
        clashes = {ext: names for ext, names in by_extension.items() if len(names) > 1}
        if not by_extension or clashes:
            # Two production artifacts with one extension would share one Redis key.
            log.error(
                "model_sync_skipped model_id=%s container=%s reason=%s",
                model_id,
                container,
                f"ambiguous {clashes}" if clashes else "no production artifact",
            )
            report.missing.append(model_id)
            continue
        keys = {model_artifact_key(model_id, ext): names[0] for ext, names in by_extension.items()}
        stale = [k for k in _artifact_keys(client, model_id) if k not in keys]
        pipe = client.pipeline(transaction=True)
        if stale:
            pipe.delete(*stale)
        for key, name in keys.items():
            pipe.set(key, container_client.download_blob(name).readall())
            report.artifacts.append(key)
        pipe.sadd(PROD_MODELS_KEY, model_id)
        pipe.execute()
        report.served.append(model_id)
    for raw in client.smembers(PROD_MODELS_KEY):
        model_id = as_text(raw)
        if model_id not in wanted:
            stale = _artifact_keys(client, model_id)
            pipe = client.pipeline(transaction=True)  # readers never see half a removal
            pipe.srem(PROD_MODELS_KEY, model_id)
            if stale:
                pipe.delete(*stale)
            pipe.execute()
            report.removed.append(model_id)
    log.info(
        "model_sync served=%s artifacts=%d removed=%s missing=%s",
        ",".join(report.served) or "-",
        len(report.artifacts),
        ",".join(report.removed) or "-",
        ",".join(report.missing) or "-",
    )
    return report
