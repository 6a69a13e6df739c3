"""PushFeatures through a real channel to a server built in-process with the Kafka publisher:
accepted events reach the features topic as the producer's messages; any bad row rejects the
call with each bad row's index and reason, and nothing is sent."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from bridge.publisher import KafkaEventPublisher
from featurestore.ingest.events import parse_message
from featurestore.ingest.publisher import MAX_REASONS, ROWS_PER_MESSAGE
from featurestore.services import ManagedService
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from tests.grpc_server.inprocess import Running, running_server

pytestmark = pytest.mark.integration

T1 = dt.datetime(2024, 6, 1, 12, 0, 0, 654321, tzinfo=dt.UTC)


@pytest.fixture
def server(
    settings: Settings, redis_service: ManagedService, kafka_service: ManagedService
) -> Iterator[Running]:
    publisher = KafkaEventPublisher(settings)
    try:
        with running_server(settings, publisher=publisher) as running:
            yield running
    finally:
        publisher.close()


def stamp(value: dt.datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


def end_offset(settings: Settings) -> int:
    """The features topic's end offset, asked again while a broker just started has no
    leader for the partition yet (NOT_LEADER_FOR_PARTITION when this file runs alone)."""
    deadline = time.monotonic() + 60
    while True:
        consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "offsets"})
        try:
            part = TopicPartition(settings.features_topic, 0)
            return int(consumer.get_watermark_offsets(part, timeout=10)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
        finally:
            consumer.close()
        time.sleep(0.5)


def messages_since(settings: Settings, offset: int, rows: int) -> list[bytes]:
    """Messages of the features topic from `offset` until they hold `rows` events."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"push-{uuid.uuid4()}"}
    )
    consumer.assign([TopicPartition(settings.features_topic, 0, offset)])
    found: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while sum(len(parse_message(m)) for m in found) < rows and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                found.append(bytes(message.value() or b""))
    finally:
        consumer.close()
    return found


def test_accepted_events_reach_the_topic_as_producer_messages(
    server: Running, settings: Settings
) -> None:
    tag = f"push{uuid.uuid4().hex[:6]}_"
    events = [
        pb.FeatureEvent(
            entity_id=f"{tag}{i // 3}",
            feature_name=f"f{i % 3}",
            value=i * 0.5,
            event_timestamp=stamp(T1 + dt.timedelta(seconds=i)),
        )
        for i in range(ROWS_PER_MESSAGE + 7)
    ]
    before = end_offset(settings)
    reply = server.stub.PushFeatures(pb.PushFeaturesRequest(events=events))
    assert reply.accepted == len(events)
    # Delivered before the reply: the messages are in the topic already.
    assert end_offset(settings) - before == 2
    columns = [parse_message(m) for m in messages_since(settings, before, len(events))]
    assert [len(c) for c in columns] == [ROWS_PER_MESSAGE, 7]
    entity = [e for c in columns for e in c.entity_id]
    value = [v for c in columns for v in c.value]
    micros = [m for c in columns for m in c.event_timestamp]
    assert entity == [e.entity_id for e in events]
    assert value == [e.value for e in events]
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert micros == [
        (T1 + dt.timedelta(seconds=i) - epoch) // dt.timedelta(microseconds=1)
        for i in range(len(events))
    ]


def test_bad_rows_are_named_and_nothing_is_sent(server: Running, settings: Settings) -> None:
    good = pb.FeatureEvent(entity_id="ok", feature_name="f", value=1.0, event_timestamp=stamp(T1))
    events = [
        good,
        pb.FeatureEvent(entity_id="", feature_name="f", value=1.0, event_timestamp=stamp(T1)),
        good,
        pb.FeatureEvent(
            entity_id="x", feature_name="f", value=float("inf"), event_timestamp=stamp(T1)
        ),
        pb.FeatureEvent(entity_id="x", feature_name="f\x01", value=1.0, event_timestamp=stamp(T1)),
        pb.FeatureEvent(entity_id="x", feature_name="f", value=1.0),
    ]
    before = end_offset(settings)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.PushFeatures(pb.PushFeaturesRequest(events=events))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "4 of 6 events rejected, none sent: "
        "event 1: missing field(s): entity_id; "
        "event 3: value must be finite, got inf; "
        "event 4: feature_name contains control characters; "
        "event 5: missing field(s): event_timestamp"
    )
    assert end_offset(settings) == before


def test_many_bad_rows_are_counted_beyond_those_named(server: Running) -> None:
    events = [pb.FeatureEvent(entity_id="x", feature_name="f", value=1.0)] * (MAX_REASONS + 5)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.PushFeatures(pb.PushFeaturesRequest(events=events))
    details = caught.value.details()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{MAX_REASONS + 5} of {MAX_REASONS + 5} events rejected")
    named = details.count("missing field(s): event_timestamp")
    assert 0 < named <= MAX_REASONS
    assert details.endswith(f"; and {MAX_REASONS + 5 - named} more")  # not cut off


def test_an_empty_push_is_invalid(server: Running) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.PushFeatures(pb.PushFeaturesRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "no events given"
