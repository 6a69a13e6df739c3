"""How the bridge's loop takes Kafka's errors (no services: nothing is consumed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from bridge.consumer import Bridge
from tasks.app import configure
from tests.conftest import make_settings


@pytest.fixture
def bridge(tmp_path: Path) -> Bridge:
    settings = make_settings(tmp_path, kafka_bootstrap="localhost:1")
    return Bridge(settings, configure(settings), threading.Event())


def test_a_fatal_error_ends_the_consumer_so_that_main_starts_a_new_one(bridge: Bridge) -> None:
    # A static member fenced after a broker outage longer than its session: librdkafka's
    # consumer never consumes again, so carrying on would stall ingestion for good.
    # As librdkafka hands it to a consumer: code _FATAL, the fatal() flag unset.
    fenced = KafkaError(KafkaError._FATAL, "static consumer fenced")
    with pytest.raises(KafkaException) as raised:
        bridge._take(Message(error=fenced))
    assert raised.value.args[0].code() == KafkaError._FATAL
    with pytest.raises(KafkaException):
        bridge._take(Message(error=KafkaError(KafkaError._FENCED, "fenced", fatal=True)))


def test_a_passing_error_is_counted_and_the_loop_goes_on(bridge: Bridge) -> None:
    bridge._take(Message(error=KafkaError(KafkaError._TRANSPORT, "broker down")))
    bridge._take(Message(error=KafkaError(KafkaError._PARTITION_EOF, "end")))
    assert bridge.batcher.due(flush=True) == []
