"""GetModel and reflection through a real channel to a server built in-process on real Redis."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import grpc
import pytest
import redis
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from featurestore.services import ManagedService
from featurestore.serving.manifest import SyncStatus, write_status
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.main import build_server
from tests.grpc_server.inprocess import Running, running_server
from tests.serving.onnx_models import linear_classifier, publish_model, scaler_json

pytestmark = pytest.mark.integration

FEATURES = [("debt_to_income_ratio", "float"), ("age_years", "int")]
FAILED_AT = dt.datetime(2024, 7, 1, 9, 30, tzinfo=dt.UTC)
SYNCED_AT = dt.datetime(2024, 7, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def server(settings: Settings, redis_service: ManagedService) -> Iterator[Running]:
    with running_server(settings) as running:
        yield running


@pytest.fixture
def client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


def test_get_model_of_a_served_model(server: Running, client: redis.Redis) -> None:
    model_id = f"m_{uuid.uuid4().hex[:6]}"
    artifacts = {"onnx": linear_classifier(2), "json": scaler_json([0.0, 1.0], [1.0, 2.0])}
    published = publish_model(client, model_id, "2.0.1", artifacts, FEATURES)
    write_status(
        client,
        SyncStatus(
            model_id=model_id,
            last_success_at=SYNCED_AT,
            last_error_at=FAILED_AT,
            last_error_reason="input_width",
            last_error="model.onnx takes 3 inputs, 2 expected features",
            rejected_version="2.1.0",
        ),
    )
    reply = server.stub.GetModel(pb.GetModelRequest(model_id=model_id))
    assert (reply.model_id, reply.version, reply.served) == (model_id, "2.0.1", True)
    assert [(a.extension, a.bytes, a.etag, a.artifact_type, a.blob) for a in reply.artifacts] == [
        (ext, len(artifacts[ext]), info.etag, info.artifact_type, info.blob)
        for ext, info in sorted(published.artifacts.items())
    ]
    assert reply.artifacts[0].synced_at.ToDatetime(dt.UTC) == published.artifacts["json"].synced_at
    assert reply.artifacts[0].container == "models"
    assert [(f.index, f.name, f.type) for f in reply.expected_features] == [
        (0, "debt_to_income_ratio", "float"),
        (1, "age_years", "int"),
    ]
    error = reply.last_sync_error
    assert (error.reason, error.message) == (
        "input_width",
        "model.onnx takes 3 inputs, 2 expected features",
    )
    assert error.time.ToDatetime(dt.UTC) == FAILED_AT
    assert reply.last_success_at.ToDatetime(dt.UTC) == SYNCED_AT
    assert reply.rejected_version == "2.1.0"


def test_get_model_of_a_model_that_never_synced(server: Running, client: redis.Redis) -> None:
    model_id = f"m_{uuid.uuid4().hex[:6]}"
    write_status(
        client,
        SyncStatus(
            model_id=model_id,
            last_error_at=FAILED_AT,
            last_error_reason="no_model",
            last_error="no production .onnx artifact",
        ),
    )
    reply = server.stub.GetModel(pb.GetModelRequest(model_id=model_id))
    assert (reply.served, reply.version, len(reply.artifacts)) == (False, "", 0)
    assert reply.last_sync_error.reason == "no_model"
    assert not reply.HasField("last_success_at")


def test_get_model_without_any_sync_error(server: Running, client: redis.Redis) -> None:
    model_id = f"m_{uuid.uuid4().hex[:6]}"
    publish_model(client, model_id, "1", {"onnx": linear_classifier(2)}, FEATURES)
    reply = server.stub.GetModel(pb.GetModelRequest(model_id=model_id))
    assert reply.served and not reply.HasField("last_sync_error")


def test_get_model_of_an_unknown_model_is_not_found(server: Running) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetModel(pb.GetModelRequest(model_id="never_heard_of"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "model never_heard_of is not served and has no sync record"
    with pytest.raises(grpc.RpcError) as empty:
        server.stub.GetModel(pb.GetModelRequest())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.value.details() == "model_id must not be empty"


def test_a_corrupt_manifest_is_internal_with_no_text(server: Running, client: redis.Redis) -> None:
    model_id = f"m_{uuid.uuid4().hex[:6]}"
    client.set(f"model_manifest:{model_id}", b'{"model_id": "truncated')
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetModel(pb.GetModelRequest(model_id=model_id))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"


def list_services(channel: grpc.Channel) -> set[str]:
    """Service names the server's reflection service lists."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return {service.name for service in reply.list_services_response.service}


def test_reflection_lists_every_service(server: Running) -> None:
    names = list_services(server.channel)
    assert {
        "featurestore.v1.FeatureStore",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


def test_a_second_server_cannot_take_the_same_port(server: Running, settings: Settings) -> None:
    # Without grpc.so_reuseport off, the second bind succeeds and steals connections.
    second = settings.model_copy(update={"grpc_host": "localhost", "grpc_port": server.port})
    serving, models = server.serving, server.models
    with pytest.raises(RuntimeError):
        build_server(second, serving, models, server.readiness)
