"""The gRPC API against the whole stack: pushed events through Kafka, the bridge and the
DuckDB worker into the online store; a model from Azurite through the model-sync worker
into Predict; the fallback read through Celery; health gated by the start-up sync."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import redis
from azure.storage.blob import BlobServiceClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featurestore import constants
from featurestore import stack as stack_module
from featurestore.settings import Settings
from featurestore.store.online import as_text
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.main import start_background
from tests.grpc_server.inprocess import running_server
from tests.grpc_server.test_models import list_services
from tests.helpers import run_cli, wait_until
from tests.serving.onnx_models import linear_classifier, scaler_json

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FEATURES = [("debt_to_income_ratio", "float"), ("age_years", "int")]
WEIGHTS = [3.0, -0.05]
MEAN, SCALE = [0.3, 40.0], [0.15, 10.0]
T1 = dt.datetime(2024, 8, 1, 9, 0, 0, 500000)


@pytest.fixture
def channel(stack: Settings) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"localhost:{stack.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        yield channel


def health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(reply.status)


def push(stub: pb_grpc.FeatureStoreStub, rows: list[tuple[str, str, float]]) -> int:
    events = []
    for entity, name, value in rows:
        event = pb.FeatureEvent(entity_id=entity, feature_name=name, value=value)
        event.event_timestamp.FromDatetime(T1)
        events.append(event)
    return int(stub.PushFeatures(pb.PushFeaturesRequest(events=events), timeout=60).accepted)


def test_the_stacks_server_is_serving_and_lists_its_services(channel: grpc.Channel) -> None:
    assert wait_until(lambda: health(channel) == SERVING, timeout=120)
    assert {"featurestore.v1.FeatureStore", "inference.GRPCInferenceService"} <= list_services(
        channel
    )


def test_pushed_events_become_online_features(channel: grpc.Channel) -> None:
    stub = pb_grpc.FeatureStoreStub(channel)
    tag = f"sp{uuid.uuid4().hex[:6]}_"
    rows = [(f"{tag}a", "age_years", 41.0), (f"{tag}a", "dti", 0.3), (f"{tag}b", "dti", 0.7)]
    assert push(stub, rows) == 3
    request = pb.GetOnlineFeaturesRequest(
        entity_ids=[f"{tag}a", f"{tag}b"], feature_names=["age_years", "dti"]
    )

    def arrived() -> bool:
        reply = stub.GetOnlineFeatures(request, timeout=10)
        return sum(bool(f.present) for r in reply.results for f in r.features) == 3

    assert wait_until(arrived, timeout=120)
    reply = stub.GetOnlineFeatures(request, timeout=10)
    assert [[(f.present, f.value) for f in r.features] for r in reply.results] == [
        [(True, 41.0), (True, 0.3)],
        [(False, 0.0), (True, 0.7)],
    ]
    assert reply.results[0].features[0].event_timestamp.ToDatetime() == T1


def publish_through_azure(stack: Settings, model_id: str, tmp_path: Path) -> dict[str, bytes]:
    """Upload a model and its scaler to Azurite, register and promote it with the CLI."""
    artifacts = {"onnx": linear_classifier(2, WEIGHTS), "json": scaler_json(MEAN, SCALE)}
    container = BlobServiceClient.from_connection_string(
        stack.azure_connection_string
    ).get_container_client(stack.azure_container)
    container.upload_blob(f"{model_id}/model_production.onnx", artifacts["onnx"])
    container.upload_blob(f"{model_id}/scaler_production.json", artifacts["json"])
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "model_id": model_id,
                "artifact_type": "model",
                "version": "3.1.0",
                "azure_location": stack.azure_container,
                "expected_features": [
                    {"index": i, "name": name, "type": kind}
                    for i, (name, kind) in enumerate(FEATURES)
                ],
            }
        )
    )
    for args in (["register", str(spec)], ["promote", model_id, "3.1.0"]):
        result = run_cli(stack, "model", *args)
        assert result.returncode == 0, result.stderr
    return artifacts


def in_process(onnx: bytes, raw: list[float]) -> np.ndarray:
    """The probabilities ONNX Runtime gives here for raw features, cast and scaled."""
    x = np.array([raw], dtype=np.float64)
    x[:, 1] = np.round(x[:, 1])
    x = ((x - np.asarray(MEAN)) / np.asarray(SCALE)).astype(np.float32)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probabilities"], {"input": x})[0][0])


def test_predict_through_azure_and_the_model_sync_worker(
    stack: Settings, channel: grpc.Channel, tmp_path: Path
) -> None:
    stub = pb_grpc.FeatureStoreStub(channel)
    model_id = f"stack_credit_{uuid.uuid4().hex[:6]}"
    entity = f"spm{uuid.uuid4().hex[:6]}"
    assert push(stub, [(entity, "debt_to_income_ratio", 0.42), (entity, "age_years", 36.6)]) == 2
    artifacts = publish_through_azure(stack, model_id, tmp_path)
    request = pb.PredictRequest(model_id=model_id, entity_ids=[entity])

    def predicted() -> pb.PredictResponse | None:
        try:
            return stub.Predict(request, timeout=30)  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            # Not served yet, or the pushed events not online yet.
            assert exc.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION,
            ), exc.details()
            return None

    assert wait_until(lambda: predicted() is not None, timeout=180)
    reply = predicted()
    assert reply is not None
    assert reply.model_version == "3.1.0"
    [prediction] = reply.predictions
    assert [(f.value, f.origin) for f in prediction.features] == [
        (0.42, pb.UsedFeature.ONLINE),
        (36.6, pb.UsedFeature.ONLINE),
    ]
    probabilities = next(o.values for o in prediction.outputs if o.name == "probabilities")
    np.testing.assert_allclose(
        probabilities, in_process(artifacts["onnx"], [0.42, 36.6]), rtol=1e-6
    )

    # Without the online values, the same features come from DuckDB through Celery.
    redis.Redis.from_url(stack.redis_url).delete(constants.online_feature_key(entity))
    # (The latest-values table folds new rows in every merge interval.)
    assert wait_until(lambda: predicted() is not None, timeout=60)
    fallback = stub.Predict(request, timeout=30)
    assert [(f.value, f.origin) for f in fallback.predictions[0].features] == [
        (0.42, pb.UsedFeature.FALLBACK),
        (36.6, pb.UsedFeature.FALLBACK),
    ]
    assert fallback.predictions[0].features[0].event_timestamp.ToDatetime() == T1
    assert list(fallback.predictions[0].outputs) == list(prediction.outputs)

    described = stub.GetModel(pb.GetModelRequest(model_id=model_id), timeout=10)
    assert (described.served, described.version) == (True, "3.1.0")
    assert {a.extension: a.bytes for a in described.artifacts} == {
        ext: len(data) for ext, data in artifacts.items()
    }
    assert [a.blob for a in described.artifacts] == [
        f"{model_id}/scaler_production.json",
        f"{model_id}/model_production.onnx",
    ]
    assert described.HasField("last_success_at") and not described.HasField("last_sync_error")


def test_health_stays_not_serving_until_the_first_sync(stack: Settings) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    stack_module.stop_program(stack, "model-sync")
    stop = threading.Event()
    try:
        with running_server(stack) as server:
            start_background(stack, server.models, server.readiness, server.health_servicer, stop)
            # The start-up sync task waits in the queue of the stopped worker.
            assert wait_until(lambda: bool(client.llen(stack.model_sync_queue)), timeout=30)
            assert server.health() == NOT_SERVING
            assert not server.readiness()
            assert server.stub.ListModels(pb.ListModelsRequest()) is not None  # it answers
            stack_module.start_program(stack, "model-sync")
            assert wait_until(lambda: server.health() == SERVING, timeout=120)
            served = sorted(as_text(m) for m in client.smembers(constants.PROD_MODELS_KEY))
            assert server.models.served() == served
    finally:
        stop.set()
        if "model-sync" not in {
            p.name for p in stack_module.programs(stack) if p.state == "RUNNING"
        }:
            stack_module.start_program(stack, "model-sync")
