"""What the sync tests share: a real DuckDB registry read through LocalReader, real Azurite
containers and a Redis database of their own (flushed per test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from azure.storage.blob import BlobServiceClient
from prometheus_client import REGISTRY

from featurestore.services import ManagedService
from featurestore.serving import artifacts
from featurestore.serving.sync import SyncReport, sync_models
from featurestore.settings import Settings
from featurestore.store import registry
from featurestore.store.database import Store
from featurestore.store.local_reader import LocalReader
from tests.serving import onnx_models

FEATURES = [("debt_to_income_ratio", "float"), ("age_years", "int"), ("has_default", "bool")]
WEIGHTS_V1 = [0.8, -0.02, 1.5]
WEIGHTS_V2 = [-0.4, 0.03, 0.7]
MEAN = [0.3, 40.0, 0.0]
SCALE = [0.2, 12.0, 1.0]
# Redis database of the sync tests: they flush it, and demotion removes every served model
# the test's registry does not hold, so they keep out of the other tests' database.
SYNC_DB = 5


def classifier(weights: list[float] = WEIGHTS_V1, width: int = len(FEATURES)) -> bytes:
    """ONNX bytes of a small classifier."""
    return onnx_models.linear_classifier(width, weights, bias=0.1)


def scaler(width: int = len(FEATURES)) -> bytes:
    """JSON scaler bytes."""
    return onnx_models.scaler_json(MEAN[:width], SCALE[:width])


def metric(name: str, **labels: str) -> float:
    """A sample of this process's metrics (0 when never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class SyncEnv:
    """One test's registry, blob containers, Redis and settings."""

    settings: Settings
    store: Store
    client: redis.Redis
    blobs: BlobServiceClient
    model_id: str = field(default_factory=lambda: f"credit_{uuid.uuid4().hex[:8]}")
    containers: list[str] = field(default_factory=list)

    @property
    def reader(self) -> LocalReader:
        """The registry as the sync reads it."""
        return LocalReader(self.store)

    def container(self, index: int = 0) -> str:
        """Name of the test's index-th container (created on first use)."""
        while len(self.containers) <= index:
            name = f"models-{uuid.uuid4().hex[:10]}"
            self.blobs.create_container(name)
            self.containers.append(name)
        return self.containers[index]

    def upload(self, name: str, data: bytes, container: int = 0) -> str:
        """Upload (or replace) a blob under the model's folder; returns its unquoted ETag."""
        blob = self.blobs.get_blob_client(self.container(container), f"{self.model_id}/{name}")
        blob.upload_blob(data, overwrite=True)
        return artifacts.unquote(blob.get_blob_properties().etag)

    def upload_raw(self, full_name: str, data: bytes, container: int = 0) -> None:
        """Upload a blob under any name (for names the rule ignores)."""
        self.blobs.get_blob_client(self.container(container), full_name).upload_blob(
            data, overwrite=True
        )

    def delete(self, name: str, container: int = 0) -> None:
        """Delete one of the model's blobs."""
        blob = self.blobs.get_blob_client(self.container(container), f"{self.model_id}/{name}")
        blob.delete_blob()

    def register(
        self,
        version: str,
        artifact_type: str = "model",
        container: int = 0,
        features: list[tuple[str, str]] = FEATURES,
        model_id: str | None = None,
    ) -> None:
        """Register one artifact row (staging) in the test's DuckDB."""
        spec = registry.ArtifactSpec(
            model_id=model_id or self.model_id,
            artifact_type=artifact_type,
            version=version,
            azure_location=self.container(container),
            expected_features=onnx_models.expected_features(features),
        )
        registry.register(self.store.cursor(), spec)

    def promote(self, version: str, model_id: str | None = None) -> None:
        """Make the version production."""
        registry.promote(self.store.cursor(), model_id or self.model_id, version)

    def archive(self, version: str, model_id: str | None = None) -> None:
        """Archive the version."""
        registry.archive(self.store.cursor(), model_id or self.model_id, version)

    def serve_v1(self) -> SyncReport:
        """Version 1.0.0 (classifier + scaler) registered, promoted and synced."""
        self.upload("model_production.onnx", classifier())
        self.upload("scaler_production.json", scaler())
        self.register("1.0.0", "model")
        self.register("1.0.0", "scaler")
        self.promote("1.0.0")
        report = self.sync()
        assert report.published == [self.model_id], report
        return report

    def sync(self, blobs: BlobServiceClient | None = None, **overrides: Any) -> SyncReport:
        """One sync with these settings (overridden)."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return sync_models(self.reader, blobs or self.blobs, self.client, settings)


@pytest.fixture
def env(
    settings: Settings,
    redis_service: ManagedService,
    azurite_service: ManagedService,
    tmp_path: Path,
) -> Iterator[SyncEnv]:
    """A fresh registry, containers and Redis database for one test."""
    url = settings.redis_url.rsplit("/", 1)[0] + f"/{SYNC_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    store = Store(tmp_path / "features.duckdb")
    blobs = artifacts.blob_client(settings, retries=0)
    sync_env = SyncEnv(settings, store, client, blobs)
    yield sync_env
    for name in sync_env.containers:
        blobs.delete_container(name)
    blobs.close()
    store.close()
    client.close()
