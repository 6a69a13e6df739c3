"""Publish a trained model: artifacts to Azure Blob, metadata through the model registry."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
from pathlib import Path

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from celery import Celery

from demo.model import Artifacts
from featurestore.cli import models as cli_models
from featurestore.errors import ValidationError
from featurestore.settings import Settings
from featurestore.store.registry import ArtifactSpec, ExpectedFeature, ModelRecord, list_sql
from tasks.client.query import query

MODEL_ID = "credit_risk_v1"
VERSION = "1.0.0"
# Blob name (under the model's folder) and registry artifact type of each artifact.
BLOBS = {"onnx": ("model_production.onnx", "model"), "json": ("scaler_production.json", "scaler")}


def upload(settings: Settings, model_id: str, artifacts: Artifacts) -> dict[str, str]:
    """Upload both artifacts as the model's production blobs; their ETags by extension."""
    blobs = BlobServiceClient.from_connection_string(settings.azure_connection_string)
    container = blobs.get_container_client(settings.azure_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    data = {"onnx": artifacts.onnx, "json": artifacts.scaler_json}
    etags = {}
    for extension, (name, _kind) in BLOBS.items():
        blob = container.get_blob_client(f"{model_id}/{name}")
        result = blob.upload_blob(data[extension], overwrite=True)
        etags[extension] = str(result["etag"]).strip('"')
    return etags


def specs(
    settings: Settings, model_id: str, version: str, features: list[ExpectedFeature]
) -> list[ArtifactSpec]:
    """The registry rows of one version: its model and its scaler."""
    return [
        ArtifactSpec(
            model_id=model_id,
            artifact_type=kind,
            version=version,
            trained_date=dt.datetime.now(dt.UTC).date(),
            azure_location=settings.azure_container,
            expected_features=features,
        )
        for _name, kind in BLOBS.values()
    ]


def register_and_promote(
    settings: Settings, app: Celery, artifacts: list[ArtifactSpec], folder: Path
) -> list[str]:
    """Register what is not registered yet (as `fstore model register FILE` does, from a
    JSON file written in folder) and promote the version; what was registered."""
    model_id, version = artifacts[0].model_id, artifacts[0].version
    sql, params = list_sql(model_id, None)
    existing = {
        r.artifact_type: r
        for r in query(app, sql, params, ModelRecord, timeout=settings.query_timeout_s)
        if r.version == version
    }
    for spec in artifacts:
        found = existing.get(spec.artifact_type)
        if found is not None and found.expected_features != spec.expected_features:
            raise ValidationError(
                f"{model_id} {version} {spec.artifact_type} is registered with other expected "
                "features; register the model under a new version (--version)"
            )
    new = [spec for spec in artifacts if spec.artifact_type not in existing]
    if new:
        path = folder / f"{model_id}-{version}.json"
        path.write_bytes(
            orjson.dumps([spec.model_dump(mode="json") for spec in new], option=orjson.OPT_INDENT_2)
        )
        cli_models.run(settings, app, argparse.Namespace(model_command="register", file=path))
    cli_models.run(
        settings,
        app,
        argparse.Namespace(model_command="promote", model_id=model_id, version=version),
    )
    return [spec.artifact_type for spec in new]
