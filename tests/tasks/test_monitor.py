"""Beat's samples: Celery queue lengths from Redis, the bridge group's committed offsets and
lag from Kafka (real Redis and Kafka; topics, queues and group of the test's own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client import REGISTRY

from featurestore.services import ManagedService
from featurestore.settings import Settings
from tasks.monitor import Monitor
from tests.conftest import PORT_OFFSET

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
def own(
    settings: Settings, redis_service: ManagedService, kafka_service: ManagedService
) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:8]
    local = settings.model_copy(
        update={
            "write_queue": f"w_{tag}",
            "read_queue": f"r_{tag}",
            "model_sync_queue": f"m_{tag}",
            "features_topic": f"features_{tag}",
            "predictions_topic": f"predictions_{tag}",
            "consumer_group": f"group_{tag}",
        }
    )
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = [local.features_topic, local.predictions_topic]
    for done in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        done.result(30)
    yield local
    for done in admin.delete_topics(topics).values():
        done.result(30)
    redis.Redis.from_url(settings.redis_url).delete(
        local.write_queue, local.write_queue + "\x06\x166", local.read_queue
    )


def produce(settings: Settings, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(count):
        producer.produce(topic, str(i).encode())
    assert producer.flush(30) == 0


def commit(settings: Settings, topic: str, offset: int) -> None:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.consumer_group}
    )
    consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    consumer.close()


def nowhere(settings: Settings) -> Settings:
    """The settings with a Kafka address where no broker answers."""
    return settings.model_copy(update={"kafka_bootstrap": f"localhost:{29092 + PORT_OFFSET + 9}"})


def test_queue_lengths_count_every_list_of_a_queue(own: Settings) -> None:
    client = redis.Redis.from_url(own.redis_url)
    client.rpush(own.write_queue, "a", "b", "c")
    client.rpush(own.write_queue + "\x06\x166", "d")  # a task sent with priority 6
    client.rpush(own.read_queue, "e")
    monitor = Monitor(own)
    monitor.sample_queues()
    assert sample("fstore_celery_queue_length", queue=own.write_queue) == 4
    assert sample("fstore_celery_queue_length", queue=own.read_queue) == 1
    assert sample("fstore_celery_queue_length", queue=own.model_sync_queue) == 0
    assert sample("fstore_dependency_up", dependency="redis") == 1
    client.lpop(own.write_queue)
    monitor.sample_queues()
    monitor.close()
    assert sample("fstore_celery_queue_length", queue=own.write_queue) == 3


def test_lag_is_high_watermark_minus_the_groups_committed_offset(own: Settings) -> None:
    produce(own, own.features_topic, 5)
    produce(own, own.predictions_topic, 4)
    commit(own, own.features_topic, 2)
    monitor = Monitor(own)
    monitor.sample_lag()
    features = {"topic": own.features_topic, "partition": "0"}
    predictions = {"topic": own.predictions_topic, "partition": "0"}
    assert sample("fstore_kafka_committed_offset", **features) == 2
    assert sample("fstore_kafka_consumer_lag_messages", **features) == 3
    # Never committed by the group: all of it waits.
    assert sample("fstore_kafka_consumer_lag_messages", **predictions) == 4
    assert sample("fstore_kafka_committed_offset", **predictions) == 0
    assert sample("fstore_dependency_up", dependency="kafka") == 1
    commit(own, own.features_topic, 5)
    monitor.sample_lag()
    monitor.close()
    assert sample("fstore_kafka_consumer_lag_messages", **features) == 0


def test_kafka_unreachable_clears_the_lag_and_says_so(own: Settings) -> None:
    produce(own, own.features_topic, 1)
    reachable, unreachable = Monitor(own), Monitor(nowhere(own))
    reachable.sample_lag()
    reachable.close()
    labels = {"topic": own.features_topic, "partition": "0"}
    assert sample("fstore_kafka_consumer_lag_messages", **labels) == 1
    unreachable.sample_lag()
    unreachable.close()
    assert sample("fstore_dependency_up", dependency="kafka") == 0
    assert sample("fstore_kafka_consumer_lag_messages", **labels) is None
