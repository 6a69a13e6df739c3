"""Kafka start-up against a real broker: address families, idempotence, SIGKILL recovery."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from featurestore.services import KafkaService, ManagedService
from featurestore.services._proc import pid_alive
from featurestore.services.kafka import new_cluster_id
from featurestore.settings import Settings
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def _round_trip(bootstrap: str, topic: str) -> None:
    payload = uuid.uuid4().bytes
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, payload)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    seen = []
    try:
        while time.monotonic() < deadline and payload not in seen:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.append(msg.value())
    finally:
        consumer.close()
    assert payload in seen, f"produced message not consumed through {bootstrap}"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_every_bootstrap_form_finds_the_running_broker(
    kafka_service: ManagedService, settings: Settings, host: str
) -> None:
    port = settings.kafka_bootstrap.rsplit(":", 1)[1]
    bootstrap = f"{host}:{port}"
    pid_before = kafka_service.status().pid
    status = KafkaService(settings.model_copy(update={"kafka_bootstrap": bootstrap})).ensure()
    assert status.reachable
    assert not status.started, "a second call must not start another broker"
    assert status.pid == pid_before
    _round_trip(bootstrap, settings.features_topic)


def test_topics_have_one_partition_and_one_replica(
    kafka_service: ManagedService, settings: Settings
) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    for name in (settings.features_topic, settings.dead_letter_topic):
        assert name in topics
        partitions = topics[name].partitions
        assert len(partitions) == 1
        assert len(partitions[0].replicas) == 1


def test_broker_killed_with_sigkill_is_started_again(
    kafka_service: ManagedService, settings: Settings
) -> None:
    old_pid = kafka_service.status().pid
    assert old_pid is not None, "the session should have started its own broker"
    os.kill(old_pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(old_pid), timeout=10)
    assert kafka_service.probe() is None
    status = kafka_service.ensure()
    assert status.started
    assert status.pid is not None and status.pid != old_pid
    _round_trip(settings.kafka_bootstrap, settings.features_topic)


def test_non_local_address_that_does_not_answer_is_not_started(settings: Settings) -> None:
    remote = KafkaService(settings.model_copy(update={"kafka_bootstrap": "192.0.2.1:9092"}))
    assert not remote.is_local()
    with pytest.raises(Exception, match=r"192\.0\.2\.1:9092.*not local"):
        remote.ensure()


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first random id starts with "-" (base64 of 0xfb...): it must be drawn again.
    draws = iter([uuid.UUID(bytes=b"\xfb" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
