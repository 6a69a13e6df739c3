"""GetOnlineFeatures for many entities and for single-entity callers, through a real channel
to a server built in-process on real Redis."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import grpc
import pytest
import redis

from featurestore.services import ManagedService
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from tests.grpc_server.inprocess import Running, put_online, running_server

pytestmark = pytest.mark.integration

T1 = dt.datetime(2024, 5, 1, 10, 0, 0, 123456)
T2 = dt.datetime(2024, 5, 2, 11, 30)


@pytest.fixture
def server(redis_service: ManagedService, settings: Settings) -> Iterator[Running]:
    with running_server(settings.model_copy(update={"max_entities_per_call": 5})) as running:
        yield running


@pytest.fixture
def entities(settings: Settings) -> list[str]:
    tag = f"of{uuid.uuid4().hex[:6]}_"
    client = redis.Redis.from_url(settings.redis_url)
    put_online(client, f"{tag}a", {"age_years": (41, T1), "debt_to_income_ratio": (0.31, T2)})
    put_online(client, f"{tag}b", {"age_years": (29, T2)})
    return [f"{tag}a", f"{tag}b", f"{tag}unknown"]


def _values(features: list[pb.FeatureValue]) -> dict[str, tuple[bool, float]]:
    return {f.feature_name: (f.present, f.value) for f in features}


def test_many_entities_in_request_order(server: Running, entities: list[str]) -> None:
    a, b, unknown = entities
    reply = server.stub.GetOnlineFeatures(
        pb.GetOnlineFeaturesRequest(
            entity_ids=[b, unknown, a], feature_names=["debt_to_income_ratio", "age_years"]
        )
    )
    assert [r.entity_id for r in reply.results] == [b, unknown, a]
    assert [_values(list(r.features)) for r in reply.results] == [
        {"debt_to_income_ratio": (False, 0.0), "age_years": (True, 29.0)},
        {"debt_to_income_ratio": (False, 0.0), "age_years": (False, 0.0)},
        {"debt_to_income_ratio": (True, 0.31), "age_years": (True, 41.0)},
    ]
    # The single-entity fields stay empty when several entities were asked for.
    assert reply.entity_id == "" and not reply.features
    stamp = reply.results[2].features[0].event_timestamp.ToDatetime()
    assert stamp == T2
    assert reply.results[2].features[1].event_timestamp.ToDatetime() == T1


def test_every_feature_of_each_entity_when_none_named(server: Running, entities: list[str]) -> None:
    a, b, unknown = entities
    reply = server.stub.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(entity_ids=[a, b, unknown]))
    assert [[f.feature_name for f in r.features] for r in reply.results] == [
        ["age_years", "debt_to_income_ratio"],
        ["age_years"],
        [],
    ]
    assert all(f.present for r in reply.results for f in r.features)


def test_single_entity_callers_get_the_original_fields(
    server: Running, entities: list[str]
) -> None:
    a = entities[0]
    reply = server.stub.GetOnlineFeatures(
        pb.GetOnlineFeaturesRequest(entity_id=a, feature_names=["age_years", "nope"])
    )
    assert reply.entity_id == a
    assert _values(list(reply.features)) == {"age_years": (True, 41.0), "nope": (False, 0.0)}
    assert [r.entity_id for r in reply.results] == [a]
    assert list(reply.results[0].features) == list(reply.features)
    # One entity asked through entity_ids fills the single-entity fields too.
    again = server.stub.GetOnlineFeatures(
        pb.GetOnlineFeaturesRequest(entity_ids=[a], feature_names=["age_years", "nope"])
    )
    assert again == reply


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.GetOnlineFeaturesRequest(entity_id=""), "entity_id must not be empty"),
        (
            pb.GetOnlineFeaturesRequest(entity_id="a", entity_ids=["b"]),
            "set entity_id or entity_ids, not both",
        ),
        (
            pb.GetOnlineFeaturesRequest(entity_ids=["a", ""]),
            "entity_ids[1] must not be empty",
        ),
        (
            pb.GetOnlineFeaturesRequest(entity_ids=["a", "b\x00"]),
            "entity_ids[1] contains control characters",
        ),
        (
            pb.GetOnlineFeaturesRequest(entity_ids=["x" * 257]),
            "entity_ids[0] is longer than 256 characters",
        ),
        (
            pb.GetOnlineFeaturesRequest(entity_ids=[f"e{i}" for i in range(6)]),
            "6 entities asked for; at most 5 per call",
        ),
        # No event can carry these names: they were answered as absent features.
        (
            pb.GetOnlineFeaturesRequest(entity_ids=["a"], feature_names=["age_years", ""]),
            "feature_names[1] must not be empty",
        ),
        (
            pb.GetOnlineFeaturesRequest(entity_ids=["a"], feature_names=["f\x00"]),
            "feature_names[0] contains control characters",
        ),
        (
            pb.GetOnlineFeaturesRequest(entity_id="a", feature_names=["n" * 257]),
            "feature_names[0] is longer than 256 characters",
        ),
    ],
    ids=[
        "empty",
        "both",
        "empty-in-list",
        "control",
        "too-long",
        "over-limit",
        "empty-feature",
        "control-feature",
        "too-long-feature",
    ],
)
def test_bad_requests_are_invalid_argument_with_the_reason(
    server: Running, request_: pb.GetOnlineFeaturesRequest, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetOnlineFeatures(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == message


def test_messages_over_the_size_limit_are_refused(
    redis_service: ManagedService, settings: Settings
) -> None:
    with running_server(settings.model_copy(update={"grpc_max_message_bytes": 1024})) as small:
        with pytest.raises(grpc.RpcError) as caught:
            small.stub.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(entity_ids=["x" * 200] * 6))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_list_models(server: Running, settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    model = f"listed_{uuid.uuid4().hex[:6]}"
    client.sadd("prod_models", model)
    try:
        assert model in server.stub.ListModels(pb.ListModelsRequest()).model_ids
    finally:
        client.srem("prod_models", model)
    assert model not in server.stub.ListModels(pb.ListModelsRequest()).model_ids
