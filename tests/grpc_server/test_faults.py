"""Backing services failing under a server built in-process: Redis stopped, a fallback read
nobody answers, Kafka unreachable; each gives its status code with a fixed text, and client
deadlines bound the server's own waiting."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from celery import Celery
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from bridge.publisher import KafkaEventPublisher
from featurestore import constants
from featurestore.services import ManagedService, RedisService
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.main import SERVICE_NAME, watch_health
from tasks.client.query import CeleryReader
from tasks.result_backend import backend_url
from tests.conftest import PORT_OFFSET, make_settings
from tests.grpc_server.inprocess import put_online, running_server
from tests.helpers import wait_until
from tests.serving.onnx_models import linear_regressor, publish_model

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FEATURES = [("x", "float"), ("y", "float")]
UNANSWERED_QUEUE = "fstore_test_unanswered_reads"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[Settings, RedisService]]:
    """A Redis of this test alone, so that stopping it disturbs nothing else."""
    settings = make_settings(tmp_path, redis_url=f"redis://localhost:{26379 + PORT_OFFSET + 7}/0")
    service = RedisService(settings)
    service.ensure()
    yield settings, service
    service.stop()


def test_redis_stopped_is_unavailable_and_not_serving(
    own_redis: tuple[Settings, RedisService],
) -> None:
    settings, service = own_redis
    client = redis.Redis.from_url(settings.redis_url)
    publish_model(client, "m", "1", {"onnx": linear_regressor(2)}, FEATURES)
    put_online(
        client, "e", {"x": (1.0, dt.datetime(2024, 1, 1)), "y": (2.0, dt.datetime(2024, 1, 1))}
    )
    with running_server(settings) as server:
        server.models.refresh()
        server.readiness.synced.set()  # this test is about Redis, not the start-up sync
        assert server.readiness()
        predict = pb.PredictRequest(model_id="m", entity_ids=["e"])
        assert server.stub.Predict(predict).model_version == "1"
        service.stop()
        assert wait_until(lambda: not server.readiness(), timeout=30)
        for call, request in [
            (server.stub.Predict, predict),
            (server.stub.GetOnlineFeatures, pb.GetOnlineFeaturesRequest(entity_id="e")),
            (server.stub.ListModels, pb.ListModelsRequest()),
            (server.stub.GetModel, pb.GetModelRequest(model_id="m")),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == "the online store is unavailable"
        service.ensure()
        assert wait_until(server.readiness, timeout=30)
        assert server.stub.Predict(predict).model_version == "1"


def test_health_follows_redis(own_redis: tuple[Settings, RedisService]) -> None:
    settings, service = own_redis
    with running_server(settings) as server:
        stop = threading.Event()
        threading.Thread(
            target=watch_health,
            args=(server.health_servicer, server.readiness, stop, 0.1),
            daemon=True,
        ).start()
        try:
            assert server.health() == NOT_SERVING  # no start-up sync yet
            server.readiness.synced.set()
            assert wait_until(lambda: server.health() == SERVING, timeout=10)
            assert server.health("featurestore.v1.FeatureStore") == SERVING
            service.stop()
            assert wait_until(lambda: server.health() == NOT_SERVING, timeout=30)
            service.ensure()
            assert wait_until(lambda: server.health() == SERVING, timeout=30)
        finally:
            stop.set()


def unanswered_reader(settings: Settings, timeout: float) -> CeleryReader:
    """A Celery reader whose reads go to a queue no worker consumes (its own app, so the
    process's shared app and its read coalescer keep their queue)."""
    app = Celery("unanswered-reads")
    app.conf.update(
        broker_url=settings.redis_url,
        result_backend=backend_url(settings.redis_url),
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack", "json"],
        task_routes={constants.TASK_READ_MANY: {"queue": UNANSWERED_QUEUE}},
    )
    return CeleryReader(app, timeout)


@pytest.fixture
def slow_fallback(settings: Settings, redis_service: ManagedService) -> Iterator[str]:
    """A served model; the entity id returned has no features anywhere."""
    client = redis.Redis.from_url(settings.redis_url)
    model_id = f"slow_{uuid.uuid4().hex[:6]}"
    publish_model(client, model_id, "1", {"onnx": linear_regressor(2)}, FEATURES)
    yield model_id
    client.delete(UNANSWERED_QUEUE)


def test_a_fallback_read_that_times_out_is_deadline_exceeded(
    settings: Settings, slow_fallback: str
) -> None:
    quick = settings.model_copy(update={"query_timeout_s": 0.5})
    with running_server(quick, reader=unanswered_reader(quick, 0.5)) as server:
        server.models.refresh()
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.Predict(
                pb.PredictRequest(model_id=slow_fallback, entity_ids=["nobody"]), timeout=60
            )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details() == "a feature read did not finish in time"


def _predict_deadline_errors() -> float:
    labels = {"service": SERVICE_NAME, "method": "Predict", "code": "DEADLINE_EXCEEDED"}
    return REGISTRY.get_sample_value("fstore_grpc_request_seconds_count", labels) or 0.0


def test_the_fallback_read_gets_the_clients_remaining_time(
    settings: Settings, slow_fallback: str
) -> None:
    # The server would wait 120 s for the read; the client gives the call 1 s, and the
    # server's Predict ends soon after (counted), not when its own timeout would end it.
    patient = settings.model_copy(update={"query_timeout_s": 120.0})
    with running_server(patient, reader=unanswered_reader(patient, 120.0)) as server:
        server.models.refresh()
        before = _predict_deadline_errors()
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.Predict(
                pb.PredictRequest(model_id=slow_fallback, entity_ids=["nobody"]), timeout=1.0
            )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert wait_until(lambda: _predict_deadline_errors() == before + 1, timeout=30)


def test_kafka_unreachable_is_unavailable(
    settings: Settings, redis_service: ManagedService
) -> None:
    nowhere = settings.model_copy(
        update={"kafka_bootstrap": f"localhost:{29092 + PORT_OFFSET + 9}", "query_timeout_s": 1.0}
    )
    publisher = KafkaEventPublisher(nowhere)
    event = pb.FeatureEvent(entity_id="e", feature_name="f", value=1.0)
    event.event_timestamp.FromDatetime(dt.datetime(2024, 1, 1))
    try:
        with (
            running_server(nowhere, publisher=publisher) as server,
            pytest.raises(grpc.RpcError) as caught,
        ):
            server.stub.PushFeatures(pb.PushFeaturesRequest(events=[event]), timeout=30)
    finally:
        publisher.producer.purge()
        publisher.close(0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "a backing service is unavailable"
