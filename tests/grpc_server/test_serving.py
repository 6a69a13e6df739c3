"""The gRPC server against the real stack: online features, models synced from Azure
Blob Storage into Redis, health, and errors."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
import redis
from azure.storage.blob import BlobServiceClient

from bridge.producer import FileProducer
from featurestore import constants
from featurestore.serving import manifest
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from tasks.app import configure
from tests.helpers import run_cli, wait_for_count, wait_until
from tests.serving import onnx_models

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack: Settings) -> Iterator[pb_grpc.FeatureStoreStub]:
    with grpc.insecure_channel(f"localhost:{stack.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield pb_grpc.FeatureStoreStub(channel)


def test_online_features_over_grpc(
    stack: Settings, client: pb_grpc.FeatureStoreStub, tmp_path: Path
) -> None:
    tag = f"g{uuid.uuid4().hex[:6]}_"
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"\n".join(
            orjson.dumps(e)
            for e in [
                {
                    "entity_id": f"{tag}1",
                    "feature_name": "age_years",
                    "value": 41,
                    "event_timestamp": "2024-05-01T10:00:00Z",
                },
                {
                    "entity_id": f"{tag}1",
                    "feature_name": "debt_to_income_ratio",
                    "value": 0.31,
                    "event_timestamp": "2024-05-01T11:00:00Z",
                },
            ]
        )
        + b"\n"
    )
    FileProducer(stack).run([path])
    assert wait_for_count(configure(stack), tag, 2) == 2
    request = pb.GetOnlineFeaturesRequest(
        entity_id=f"{tag}1", feature_names=["debt_to_income_ratio", "age_years", "nope"]
    )
    assert wait_until(
        lambda: all(f.present for f in client.GetOnlineFeatures(request).features[:2]), timeout=30
    )
    reply = client.GetOnlineFeatures(request)
    got = {f.feature_name: (f.present, f.value) for f in reply.features}
    assert got == {
        "debt_to_income_ratio": (True, 0.31),
        "age_years": (True, 41.0),
        "nope": (False, 0.0),
    }
    stamp = reply.features[0].event_timestamp.ToDatetime()
    assert stamp.isoformat() == "2024-05-01T11:00:00"


def test_bad_request_gets_invalid_argument_with_a_clear_message(
    client: pb_grpc.FeatureStoreStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(entity_id=""))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "entity_id must not be empty"


def test_promoted_model_is_synced_from_azure_into_redis_and_listed(
    stack: Settings, client: pb_grpc.FeatureStoreStub, tmp_path: Path
) -> None:
    model = f"credit_risk_{uuid.uuid4().hex[:6]}"
    container = BlobServiceClient.from_connection_string(
        stack.azure_connection_string
    ).get_container_client(stack.azure_container)
    artifacts = {
        "onnx": onnx_models.linear_classifier(1, [0.5]),
        "json": onnx_models.scaler_json([40.0], [10.0]),
    }
    container.upload_blob(f"{model}/model_production.onnx", artifacts["onnx"])
    container.upload_blob(f"{model}/scaler_production.json", artifacts["json"])
    container.upload_blob(f"{model}/model_staging.onnx", b"not served")
    spec = tmp_path / "spec.json"

    def register(version: str) -> None:
        spec.write_text(
            json.dumps(
                {
                    "model_id": model,
                    "artifact_type": "model",
                    "version": version,
                    "azure_location": stack.azure_container,
                    "expected_features": [{"index": 0, "name": "age_years", "type": "int"}],
                }
            )
        )
        for args in (["register", str(spec)], ["promote", model, version]):
            result = run_cli(stack, "model", *args)
            assert result.returncode == 0, result.stderr

    # The promote sends the sync task to the model-sync worker.
    register("1.0.0")
    store = redis.Redis.from_url(stack.redis_url)
    assert wait_until(lambda: bool(store.sismember(constants.PROD_MODELS_KEY, model)))
    assert store.get(constants.model_artifact_key(model, "onnx")) == artifacts["onnx"]
    assert store.get(constants.model_artifact_key(model, "json")) == artifacts["json"]
    assert model in client.ListModels(pb.ListModelsRequest()).model_ids
    shown = run_cli(stack, "model", "show", model)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"\n{model} +yes +1\.0\.0 +\d{{4}}-\S+ \S+ +-\n", shown.stdout), shown.stdout

    # A version that fails validation is not served; the CLI shows why.
    container.upload_blob(f"{model}/model_production.onnx", b"not onnx", overwrite=True)
    register("2.0.0")

    def rejected() -> bool:
        status = manifest.read_status(store, model)
        return status is not None and status.rejected_version == "2.0.0"

    assert wait_until(rejected)
    assert store.get(constants.model_artifact_key(model, "onnx")) == artifacts["onnx"]
    listed = run_cli(stack, "model", "list")
    assert re.search(
        rf"\n{model} +yes +1\.0\.0 .*onnx_invalid \(version 2\.0\.0 not served\)\n",
        listed.stdout,
    ), listed.stdout

    archive = run_cli(stack, "model", "archive", model, "2.0.0")
    assert archive.returncode == 0, archive.stderr
    assert wait_until(lambda: not store.sismember(constants.PROD_MODELS_KEY, model))
    assert model not in client.ListModels(pb.ListModelsRequest()).model_ids
    assert store.get(constants.model_artifact_key(model, "onnx")) is None
    shown = run_cli(stack, "model", "show", model)
    assert re.search(rf"\n{model} +no +- ", shown.stdout), shown.stdout
