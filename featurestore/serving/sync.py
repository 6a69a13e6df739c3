"""Model sync: production rows of model_metadata -> Azure Blob artifacts -> validated ->
published in Redis in one MULTI (featurestore.serving.manifest).

Runs in the model-sync worker only (never in the DuckDB service: downloads can be hundreds
of MB). A model whose new artifacts fail keeps the version it serves; a model no longer in
production is removed; an unreachable Azure removes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import redis
from azure.storage.blob import BlobServiceClient

from featurestore import metrics
from featurestore.constants import PROD_MODELS_KEY, model_artifact_key, model_sync_status_key
from featurestore.errors import ArtifactError
from featurestore.logs import quoted
from featurestore.reads.reader import Reader
from featurestore.serving import artifacts, candidates, manifest
from featurestore.serving.artifacts import AZURE_UNREACHABLE, BlobRef
from featurestore.serving.manifest import ArtifactInfo, Manifest, SyncStatus
from featurestore.serving.runtime import load_model
from featurestore.settings import Settings
from featurestore.store.online import as_text
from featurestore.store.registry import ExpectedFeature, ModelRecord, list_sql

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    """What one sync did, per model and in downloads."""

    served: list[str] = field(default_factory=list)  # served after this sync
    published: list[str] = field(default_factory=list)  # a new version or new artifacts
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # model id -> reason
    downloads: int = 0
    downloads_skipped: int = 0
    bytes_downloaded: int = 0

    @property
    def azure_unreachable(self) -> bool:
        """True when Azure could not be listed for some model: the sync is incomplete."""
        return AZURE_UNREACHABLE in self.failed.values()


@dataclass
class _Sync:
    blobs: BlobServiceClient
    client: redis.Redis
    settings: Settings
    report: SyncReport


def production_rows(reader: Reader, settings: Settings) -> dict[str, list[ModelRecord]]:
    """model id -> its production rows (one per artifact), through the Reader."""
    sql, params = list_sql(None, "production")
    rows: dict[str, list[ModelRecord]] = {}
    for record in reader.query(sql, params, ModelRecord, timeout=settings.query_timeout_s):
        rows.setdefault(record.model_id, []).append(record)
    return rows


def sync_models(
    reader: Reader, blobs: BlobServiceClient, client: redis.Redis, settings: Settings
) -> SyncReport:
    """Serve every production model's current artifacts from Redis; remove demoted ones."""
    sync = _Sync(blobs, client, settings, SyncReport())
    wanted = production_rows(reader, settings)
    for model_id, rows in wanted.items():
        _sync_model(sync, model_id, rows)
    # Demotion comes from the registry, not from Azure: it applies even when Azure is down.
    for model_id in sorted({as_text(m) for m in client.smembers(PROD_MODELS_KEY)} - set(wanted)):
        _remove(sync, model_id)
    report = sync.report
    metrics.MODEL_SYNC.labels("failed" if report.failed else "ok").inc()
    log.info(
        "model_sync served=%s published=%s removed=%s failed=%s downloads=%d skipped=%d bytes=%d",
        ",".join(report.served) or "-",
        ",".join(report.published) or "-",
        ",".join(report.removed) or "-",
        ",".join(f"{m}:{r}" for m, r in report.failed.items()) or "-",
        report.downloads,
        report.downloads_skipped,
        report.bytes_downloaded,
    )
    return report


def _sync_model(sync: _Sync, model_id: str, rows: list[ModelRecord]) -> None:
    served = manifest.read_manifest(sync.client, model_id)
    try:
        candidate, data = _prepare(sync, model_id, rows, served)
    except ArtifactError as exc:
        _failed(sync, model_id, rows[0].version, served, exc)
        return
    status = SyncStatus(model_id=model_id, last_success_at=_now())
    if candidate is None:
        manifest.write_status(sync.client, status)
        sync.report.unchanged.append(model_id)
    else:
        _publish(sync, served, candidate, data, status)
        sync.report.published.append(model_id)
    version = candidate.version if candidate is not None else rows[0].version
    if served is not None and served.version != version:
        metrics.MODEL_SERVED_VERSION.remove(model_id, served.version)
    metrics.MODEL_SERVED_VERSION.labels(model_id, version).set(1)
    metrics.MODEL_SYNC_LAST_SUCCESS.labels(model_id).set_to_current_time()
    sync.report.served.append(model_id)


def _prepare(
    sync: _Sync, model_id: str, rows: list[ModelRecord], served: Manifest | None
) -> tuple[Manifest | None, dict[str, bytes]]:
    """The validated new version and its bytes; (None, {}) when what is served is current.
    Raises ArtifactError with the reason this version cannot be served."""
    features = candidates.one_version(rows)
    blobs = artifacts.match(rows, artifacts.list_model(sync.blobs, model_id, rows))
    for _, ref in blobs.values():
        artifacts.check_size(ref, sync.settings.max_artifact_bytes)
    if served is not None and candidates.same(served, rows[0].version, features, blobs):
        sync.report.downloads_skipped += len(blobs)
        metrics.MODEL_SYNC_SKIPPED.labels(model_id).inc(len(blobs))
        return None, {}
    fingerprint = candidates.fingerprint(sync.settings, rows[0].version, features, blobs)
    status = manifest.read_status(sync.client, model_id)
    if status is not None and status.rejected_fingerprint == fingerprint:
        # Every sync period would otherwise download and judge the same refused bytes.
        sync.report.downloads_skipped += len(blobs)
        metrics.MODEL_SYNC_SKIPPED.labels(model_id).inc(len(blobs))
        raise candidates.refused_again(status, fingerprint)
    try:
        candidate, data = _judge(sync, model_id, rows[0].version, features, served, blobs)
    except ArtifactError as exc:
        exc.fingerprint = fingerprint
        raise
    return candidate, data


def _judge(
    sync: _Sync,
    model_id: str,
    version: str,
    features: list[ExpectedFeature],
    served: Manifest | None,
    plan: dict[str, tuple[str, BlobRef]],
) -> tuple[Manifest, dict[str, bytes]]:
    """Download what changed and load the candidate version; raises ArtifactError."""
    data, infos = _fetch(sync, model_id, served, plan)
    candidate = Manifest(
        model_id=model_id,
        version=version,
        expected_features=features,
        artifacts=infos,
        published_at=_now(),
    )
    # Loaded here only to be judged; each serving process loads its own copy.
    load_model(candidate, data, allow_pickle=sync.settings.allow_pickle)
    return candidate, data


def _fetch(
    sync: _Sync, model_id: str, served: Manifest | None, plan: dict[str, tuple[str, BlobRef]]
) -> tuple[dict[str, bytes], dict[str, ArtifactInfo]]:
    """Every artifact's bytes: the served copy when it has the blob's ETag, else a download."""
    kept: dict[str, bytes] = {}
    if served is not None and any(
        ext in served.artifacts and candidates.holds(served.artifacts[ext], kind, ref)
        for ext, (kind, ref) in plan.items()
    ):
        published = manifest.read_published(sync.client, model_id)
        if published is not None and published[0] == served:
            kept = published[1]
    data: dict[str, bytes] = {}
    infos: dict[str, ArtifactInfo] = {}
    for ext, (kind, ref) in sorted(plan.items()):
        old = served.artifacts.get(ext) if served is not None else None
        if old is not None and ext in kept and candidates.holds(old, kind, ref):
            data[ext], infos[ext] = kept[ext], old
            sync.report.downloads_skipped += 1
            metrics.MODEL_SYNC_SKIPPED.labels(model_id).inc()
            continue
        data[ext], etag = artifacts.download(sync.blobs, ref, sync.settings.max_artifact_bytes)
        infos[ext] = ArtifactInfo(
            extension=ext,
            artifact_type=kind,
            container=ref.container,
            blob=ref.name,
            etag=etag,
            bytes=len(data[ext]),
            synced_at=_now(),
        )
        sync.report.downloads += 1
        sync.report.bytes_downloaded += len(data[ext])
        metrics.MODEL_SYNC_DOWNLOADS.labels(model_id).inc()
        metrics.MODEL_SYNC_BYTES.labels(model_id).inc(len(data[ext]))
    return data, infos


def _publish(
    sync: _Sync,
    served: Manifest | None,
    candidate: Manifest,
    data: dict[str, bytes],
    status: SyncStatus,
) -> None:
    """Artifacts, manifest, prod_models and status in one MULTI: a reader sees the old
    version or the new one, never a mix."""
    keep = {model_artifact_key(candidate.model_id, ext) for ext in data}
    stale = [k for k in _artifact_keys(sync.client, candidate.model_id, served) if k not in keep]
    pipe = sync.client.pipeline(transaction=True)
    manifest.publish(pipe, candidate, data, stale)
    manifest.write_status(pipe, status)
    pipe.execute()
    log.info(
        "model_published model_id=%s version=%s previous=%s artifacts=%s",
        candidate.model_id,
        candidate.version,
        served.version if served is not None else "-",
        ",".join(f"{ext}:{a.etag}" for ext, a in sorted(candidate.artifacts.items())),
    )


def _failed(
    sync: _Sync, model_id: str, version: str, served: Manifest | None, exc: ArtifactError
) -> None:
    """Keep what is served; record why this version was not published."""
    previous = manifest.read_status(sync.client, model_id) or SyncStatus(model_id=model_id)
    unreachable = exc.reason == AZURE_UNREACHABLE
    manifest.write_status(
        sync.client,
        previous.model_copy(
            update={
                "last_error_at": _now(),
                "last_error_reason": exc.reason,
                "last_error": str(exc),
                # Unreachable: nothing was judged, so an earlier rejection still stands.
                "rejected_version": previous.rejected_version if unreachable else version,
                "rejected_fingerprint": (
                    previous.rejected_fingerprint if unreachable else exc.fingerprint
                ),
            }
        ),
    )
    metrics.MODEL_SYNC_FAILURES.labels(model_id, exc.reason).inc()
    log.error(
        "model_sync_failed model_id=%s version=%s reason=%s served_version=%s error=%s",
        model_id,
        version,
        exc.reason,
        served.version if served is not None else "-",
        quoted(exc),
    )
    sync.report.failed[model_id] = exc.reason
    if served is not None:
        # Still served: the gauge says so after a restart of the worker too.
        metrics.MODEL_SERVED_VERSION.labels(model_id, served.version).set(1)
        sync.report.served.append(model_id)


def _remove(sync: _Sync, model_id: str) -> None:
    """Demotion: the model is no longer in production."""
    served = manifest.read_manifest(sync.client, model_id)
    pipe = sync.client.pipeline(transaction=True)  # readers never see half a removal
    manifest.unpublish(pipe, model_id, _artifact_keys(sync.client, model_id, served))
    pipe.delete(model_sync_status_key(model_id))
    pipe.execute()
    if served is not None:
        metrics.MODEL_SERVED_VERSION.remove(model_id, served.version)
    metrics.MODEL_SYNC_LAST_SUCCESS.remove(model_id)
    log.info(
        "model_removed model_id=%s version=%s",
        model_id,
        served.version if served is not None else "-",
    )
    sync.report.removed.append(model_id)


def _artifact_keys(client: redis.Redis, model_id: str, served: Manifest | None) -> list[str]:
    """The model's artifact keys in Redis: the served manifest names them."""
    if served is not None:
        return [model_artifact_key(model_id, ext) for ext in served.artifacts]
    if not client.sismember(PROD_MODELS_KEY, model_id):
        return []
    # Served by the first sync, which wrote no manifest. A SCAN walks every key (the online
    # store's too): this COUNT makes it many times faster than SCAN's default (README, Benchmarks).
    # Model ids hold no glob characters (registry pattern [A-Za-z0-9_.-]).
    match = model_artifact_key(model_id, "*")
    return [as_text(k) for k in client.scan_iter(match=match, count=1000)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
