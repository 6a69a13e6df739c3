"""Hostile requests to every gRPC method of a server built in-process on real Redis: bytes
that do not decode (strings that are not UTF-8), NUL bytes in entity ids, messages over the
size limit, and ids so long that a status naming them would not reach the client. Each gets
its own status with a bounded text; none is served, sent on, or answered INTERNAL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.message import Message

from bridge.publisher import KafkaEventPublisher
from featurestore.services import ManagedService
from featurestore.settings import Settings
from featurestore.store.database import Store
from featurestore.store.local_reader import LocalReader
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import grpc_predict_v2_pb2 as kserve
from grpc_server.status import MAX_DETAILS_CHARS
from tests.grpc_server.inprocess import Running, running_server
from tests.grpc_server.test_push import T1, end_offset, stamp
from tests.serving.onnx_models import linear_classifier, publish_model

pytestmark = pytest.mark.integration

FEATURES = [("debt_to_income_ratio", "float"), ("age_years", "int"), ("has_default", "bool")]
MARK = "zz\x01"  # stands in for the bytes put in its place on the wire
NOT_UTF8 = b"zz\xff\xfe"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "features.duckdb")
    yield store
    store.close()


@pytest.fixture
def model_id(settings: Settings, redis_service: ManagedService) -> str:
    model = f"hostile_{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(settings.redis_url)
    publish_model(client, model, "1.0.0", {"onnx": linear_classifier(3)}, FEATURES)
    return model


@pytest.fixture
def server(settings: Settings, store: Store, model_id: str) -> Iterator[Running]:
    with running_server(settings, reader=LocalReader(store)) as running:
        running.models.refresh()
        yield running


def raw_call(running: Running, path: str, data: bytes) -> grpc.RpcError:
    """Send bytes as they are to a method; the error it answers with."""
    call = running.channel.unary_unary(path)
    with pytest.raises(grpc.RpcError) as caught:
        call(data, timeout=10)
    return caught.value


def with_bytes(message: Message, replacement: bytes) -> bytes:
    """The message on the wire with MARK's bytes replaced (keeping the field's length)."""
    data = message.SerializeToString()
    assert data.count(MARK.encode()) == 1 and len(replacement) == len(MARK.encode()) + 1
    # The replacement is one byte longer: the string field's length byte grows with it.
    head, tail = data.split(MARK.encode())
    return head[:-1] + bytes([head[-1] + 1]) + replacement + tail


FS = "/featurestore.v1.FeatureStore"
UNDECODABLE = [
    (f"{FS}/GetOnlineFeatures", pb.GetOnlineFeaturesRequest(entity_ids=["a", MARK])),
    (f"{FS}/Predict", pb.PredictRequest(model_id="m", entity_ids=[MARK])),
    (f"{FS}/Predict", pb.PredictRequest(model_id=MARK, entity_ids=["a"])),
    (f"{FS}/GetModel", pb.GetModelRequest(model_id=MARK)),
    (
        f"{FS}/PushFeatures",
        pb.PushFeaturesRequest(events=[pb.FeatureEvent(entity_id=MARK, feature_name="f")]),
    ),
    ("/inference.GRPCInferenceService/ModelInfer", kserve.ModelInferRequest(model_name=MARK)),
]


@pytest.mark.parametrize(("path", "message"), UNDECODABLE)
def test_strings_that_are_not_utf8_are_invalid_argument(
    server: Running, path: str, message: Message
) -> None:
    error = raw_call(server, path, with_bytes(message, NOT_UTF8))
    method = path.rpartition("/")[2]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # gRPC's own answer: INTERNAL
    assert error.details() == (
        f"the request is not a valid {method} message (strings must be UTF-8)"
    )


@pytest.mark.parametrize("path", sorted({path for path, _ in UNDECODABLE}))
def test_bytes_that_are_no_message_are_invalid_argument(server: Running, path: str) -> None:
    assert raw_call(server, path, b"\xff\xff\xff\xff").code() == grpc.StatusCode.INVALID_ARGUMENT


def test_nul_and_control_characters_in_entity_ids_are_refused(
    server: Running, model_id: str
) -> None:
    for entity in ["a\x00b", "\x00"]:
        with pytest.raises(grpc.RpcError) as predict:
            server.stub.Predict(pb.PredictRequest(model_id=model_id, entity_ids=["ok", entity]))
        assert predict.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "entity_ids[1]" in predict.value.details()
        with pytest.raises(grpc.RpcError) as features:
            server.stub.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(entity_ids=["ok", entity]))
        assert features.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "entity_ids[1]" in features.value.details()


def test_a_model_id_that_does_not_exist_is_not_found_in_a_bounded_text(server: Running) -> None:
    # A status naming a 100k-character id went past the client's metadata limit: the client
    # saw RESOURCE_EXHAUSTED "Stream removed" instead of NOT_FOUND.
    huge = "m" * 100_000
    calls: list[Callable[[str], object]] = [
        lambda model: server.stub.Predict(pb.PredictRequest(model_id=model, entity_ids=["a"])),
        lambda model: server.stub.GetModel(pb.GetModelRequest(model_id=model)),
    ]
    for call in calls:
        for model in ["no_such_model", "../../etc/passwd", huge]:
            with pytest.raises(grpc.RpcError) as caught:
                call(model)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, model[:20]
            details = caught.value.details()
            assert model[:20] in details and len(details) < MAX_DETAILS_CHARS + 100


def test_missing_features_of_many_long_ids_are_named_in_a_bounded_text(
    server: Running, model_id: str
) -> None:
    entities = [f"{i:03d}{'x' * 250}" for i in range(200)]  # in neither Redis nor DuckDB
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Predict(pb.PredictRequest(model_id=model_id, entity_ids=entities))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = caught.value.details()
    assert details.startswith(f"model {model_id} is missing features (000x")
    assert len(details) < MAX_DETAILS_CHARS + 100


@pytest.mark.parametrize(
    "call",
    [
        lambda stub: stub.Predict(pb.PredictRequest(model_id="m", entity_ids=["x" * 200] * 10)),
        lambda stub: stub.GetModel(pb.GetModelRequest(model_id="m" * 2000)),
        lambda stub: stub.PushFeatures(
            pb.PushFeaturesRequest(events=[pb.FeatureEvent(entity_id="x" * 200)] * 10)
        ),
    ],
    ids=["Predict", "GetModel", "PushFeatures"],
)
def test_messages_over_the_size_limit_are_resource_exhausted(
    redis_service: ManagedService, settings: Settings, call: object
) -> None:
    with running_server(settings.model_copy(update={"grpc_max_message_bytes": 1024})) as small:
        with pytest.raises(grpc.RpcError) as caught:
            call(small.stub)  # type: ignore[operator]
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_pushed_events_with_nul_in_their_ids_are_refused_and_none_sent(
    settings: Settings, redis_service: ManagedService, kafka_service: ManagedService
) -> None:
    publisher = KafkaEventPublisher(settings)
    events = [
        pb.FeatureEvent(entity_id="ok", feature_name="f", value=1.0, event_timestamp=stamp(T1)),
        pb.FeatureEvent(entity_id="a\x00b", feature_name="f", value=1.0, event_timestamp=stamp(T1)),
        pb.FeatureEvent(entity_id="\x00", feature_name="f", value=1.0, event_timestamp=stamp(T1)),
        pb.FeatureEvent(entity_id="ok", feature_name="f\x00", value=1.0, event_timestamp=stamp(T1)),
    ]
    try:
        with running_server(settings, publisher=publisher) as server:
            before = end_offset(settings)
            with pytest.raises(grpc.RpcError) as caught:
                server.stub.PushFeatures(pb.PushFeaturesRequest(events=events))
    finally:
        publisher.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "3 of 4 events rejected, none sent: "
        "event 1: entity_id contains control characters; "
        "event 2: entity_id contains control characters; "
        "event 3: feature_name contains control characters"
    )
    assert end_offset(settings) == before
