"""OnlineStore.fields, Predict's read of the online store, against a real Redis: the named
fields of many entities in order, None where absent, in one round trip."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from featurestore.constants import online_feature_key
from featurestore.services import ManagedService
from featurestore.settings import Settings
from featurestore.store.online import OnlineStore
from tests.serving.test_predict import CountingConnection


@pytest.fixture
def client(settings: Settings, redis_service: ManagedService) -> Iterator[redis.Redis]:
    """A client whose round trips are counted."""
    pool = redis.ConnectionPool.from_url(settings.redis_url, connection_class=CountingConnection)
    with redis.Redis(connection_pool=pool) as c:
        yield c


def _entity(client: redis.Redis, fields: dict[str, str]) -> str:
    entity = f"e_{uuid.uuid4().hex[:8]}"
    if fields:
        client.hset(online_feature_key(entity), items=[x for item in fields.items() for x in item])
    return entity


def test_many_entities_in_order_with_gaps_in_one_round_trip(client: redis.Redis) -> None:
    full = _entity(client, {"a": "1:0.5:9", "b": "2:1.5:9", "c": "3:-2:9"})
    partial = _entity(client, {"c": "4:7:9", "z": "5:8:9"})
    unknown = _entity(client, {})
    before = CountingConnection.sends
    got = OnlineStore(client).fields([partial, unknown, full], ["a", "b", "c"])
    assert CountingConnection.sends - before == 1
    assert got == [
        [None, None, b"4:7:9"],
        [None, None, None],
        [b"1:0.5:9", b"2:1.5:9", b"3:-2:9"],
    ]


def test_one_entity(client: redis.Redis) -> None:
    entity = _entity(client, {"a": "1:0.5:9"})
    before = CountingConnection.sends
    assert OnlineStore(client).fields([entity], ["b", "a"]) == [[None, b"1:0.5:9"]]
    assert CountingConnection.sends - before == 1


def test_more_names_than_one_hmget_takes_keep_their_order(client: redis.Redis) -> None:
    # Over the script's 500 names per HMGET, so the names go in several parts.
    names = [f"f{i:04d}" for i in range(1203)]
    stored = {name: f"{i}:{i}.5:1" for i, name in enumerate(names) if i % 7}
    entities = [_entity(client, stored), _entity(client, {"f1202": "9:9:9"})]
    got = OnlineStore(client).fields(entities, names)
    assert got[0] == [stored[n].encode() if n in stored else None for n in names]
    assert got[1] == [None] * 1202 + [b"9:9:9"]


def test_no_names_gives_empty_rows(client: redis.Redis) -> None:
    entity = _entity(client, {"a": "1:0.5:9"})
    assert OnlineStore(client).fields([entity, entity], []) == [[], []]


def test_an_error_reply_midway_raises_and_leaves_the_client_usable(client: redis.Redis) -> None:
    entity = _entity(client, {"a": "1:0.5:9"})
    wrong = f"e_{uuid.uuid4().hex[:8]}"
    client.set(online_feature_key(wrong), "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        OnlineStore(client).fields([entity, wrong, entity], ["a"])
    # The replies after the error were not read: the next command must not get them.
    assert OnlineStore(client).fields([entity, entity], ["a", "b"]) == [
        [b"1:0.5:9", None],
        [b"1:0.5:9", None],
    ]
    assert client.ping()


def test_a_client_that_decodes_gives_text(
    settings: Settings, redis_service: ManagedService
) -> None:
    with redis.Redis.from_url(settings.redis_url, decode_responses=True) as text_client:
        entity = _entity(text_client, {"é": "1:0.5:9"})
        got = OnlineStore(text_client).fields([entity, entity], ["é", "b"])
    assert got == [["1:0.5:9", None], ["1:0.5:9", None]]


def test_a_single_connection_client_reads_many(
    settings: Settings, redis_service: ManagedService
) -> None:
    with redis.Redis.from_url(settings.redis_url, single_connection_client=True) as single:
        entity = _entity(single, {"a": "1:0.5:9"})
        assert OnlineStore(single).fields([entity, "nope"], ["a"]) == [[b"1:0.5:9"], [None]]
