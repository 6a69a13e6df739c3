"""What a served model version is in Redis: its manifest, its artifacts, its sync status.

Public contract (kept from the first sync): `model:<model_id>:<ext>` holds an artifact's
bytes and `prod_models` the served model ids. The manifest (`model_manifest:<model_id>`)
names the version those artifact keys hold. The sync writes the artifacts, the manifest and
`prod_models` in one MULTI, and a reader takes the manifest and the artifacts in one MGET,
so a reader never sees the scaler of one version beside the model of another.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import redis
from pydantic import BaseModel, ConfigDict

from featurestore.constants import (
    PROD_MODELS_KEY,
    model_artifact_key,
    model_manifest_key,
    model_sync_status_key,
)
from featurestore.store.registry import ExpectedFeature


class ArtifactInfo(BaseModel):
    """One published artifact: where it came from and what was copied."""

    model_config = ConfigDict(frozen=True)

    extension: str
    artifact_type: str
    container: str
    blob: str
    etag: str
    bytes: int
    synced_at: dt.datetime


class Manifest(BaseModel):
    """One served version of a model: the artifacts its keys hold, and its inputs."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    version: str
    expected_features: list[ExpectedFeature]
    artifacts: dict[str, ArtifactInfo]
    published_at: dt.datetime

    @property
    def fingerprint(self) -> str:
        """Changes whenever what is served changes: a new version, or an artifact of the
        same version replaced in Azure (a new ETag)."""
        etags = ",".join(f"{ext}={a.etag}" for ext, a in sorted(self.artifacts.items()))
        return f"{self.version}|{etags}"

    def to_json(self) -> bytes:
        """The manifest as stored in Redis."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Manifest:
        """Inverse of to_json."""
        return cls.model_validate_json(raw)


class SyncStatus(BaseModel):
    """A model's last sync outcome, shown by `fstore model show` and GetModel."""

    model_id: str
    last_success_at: dt.datetime | None = None
    last_error_at: dt.datetime | None = None
    last_error_reason: str | None = None
    last_error: str | None = None
    # A version that failed validation and is not served (the previous one still is).
    rejected_version: str | None = None
    # The blobs (and judging settings) that version was refused for: unchanged, they are
    # refused again without a download.
    rejected_fingerprint: str | None = None


def publish(
    pipe: redis.client.Pipeline, manifest: Manifest, artifacts: dict[str, bytes], stale: list[str]
) -> None:
    """Queue, on a transactional pipeline, the writes that serve `manifest` (the caller
    executes it): artifact keys, manifest, prod_models; keys of extensions no longer
    published are deleted."""
    if stale:
        pipe.delete(*stale)
    for extension, data in artifacts.items():
        pipe.set(model_artifact_key(manifest.model_id, extension), data)
    pipe.set(model_manifest_key(manifest.model_id), manifest.to_json())
    pipe.sadd(PROD_MODELS_KEY, manifest.model_id)


def unpublish(pipe: redis.client.Pipeline, model_id: str, artifact_keys: list[str]) -> None:
    """Queue the removal of a model from serving (demotion)."""
    pipe.srem(PROD_MODELS_KEY, model_id)
    pipe.delete(model_manifest_key(model_id), *artifact_keys)


def read_manifest(client: redis.Redis, model_id: str) -> Manifest | None:
    """The manifest of the version served now, or None when the model is not served."""
    raw = client.get(model_manifest_key(model_id))
    return None if raw is None else Manifest.from_json(raw)


def read_published(client: redis.Redis, model_id: str) -> tuple[Manifest, dict[str, bytes]] | None:
    """The served version's manifest and artifact bytes, read together (one MGET after the
    manifest, retried if a sync swapped versions in between); None when not served."""
    for _ in range(5):
        manifest = read_manifest(client, model_id)
        if manifest is None:
            return None
        extensions = sorted(manifest.artifacts)
        keys = [model_manifest_key(model_id)] + [
            model_artifact_key(model_id, ext) for ext in extensions
        ]
        values: list[Any] = client.mget(keys)
        if values[0] is None:
            return None
        again = Manifest.from_json(values[0])
        if again == manifest and all(v is not None for v in values[1:]):
            return again, dict(zip(extensions, values[1:], strict=True))
    return None


def read_status(client: redis.Redis, model_id: str) -> SyncStatus | None:
    """The model's last sync outcome, if any sync has seen it."""
    raw = client.get(model_sync_status_key(model_id))
    return None if raw is None else SyncStatus.model_validate_json(raw)


def write_status(client: redis.Redis | redis.client.Pipeline, status: SyncStatus) -> None:
    """Record a model's sync outcome."""
    client.set(model_sync_status_key(status.model_id), orjson.dumps(status.model_dump(mode="json")))
