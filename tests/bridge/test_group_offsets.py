"""The restore's Kafka side on a real broker: earliest and end offsets, the retention
refusal, setting the group's offsets, and the refusal while the group has a member."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.group_offsets import GroupOffsets
from featurestore.cli.backup import set_replay_offsets
from featurestore.errors import BackupError
from featurestore.services import ManagedService
from featurestore.settings import Settings
from featurestore.store.backup import Manifest, PartitionOffset
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def manifest(offsets: list[PartitionOffset]) -> Manifest:
    return Manifest("2026-01-01T00:00:00+00:00", "-", offsets, {}, "0", "-", 0, 0.0)


@pytest.fixture
def topics(settings: Settings, kafka_service: ManagedService) -> Settings:
    """Settings whose bridge topics are two new ones: the first holds offsets 4..9 (0..3
    deleted, as retention would), the second is empty; a group of its own."""
    tag = uuid.uuid4().hex[:8]
    ours = settings.model_copy(
        update={
            "features_topic": f"bk-f-{tag}",
            "predictions_topic": f"bk-p-{tag}",
            "consumer_group": f"bk-{tag}",
        }
    )
    admin = AdminClient(ours.kafka_client_config())
    new = [NewTopic(t, num_partitions=1, replication_factor=1) for t in GroupOffsets(ours).topics]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result()
    producer = Producer(ours.kafka_client_config())
    for n in range(10):
        producer.produce(ours.features_topic, f"{n}".encode())
    assert producer.flush(30) == 0
    deleted = admin.delete_records([TopicPartition(ours.features_topic, 0, 4)])
    for future in deleted.values():
        future.result()
    return ours


def test_restore_offsets_follow_what_kafka_still_holds(topics: Settings) -> None:
    group = GroupOffsets(topics)
    f, p = (topics.features_topic, 0), (topics.predictions_topic, 0)
    assert group.partitions() == sorted([f, p])
    assert group.earliest([f, p]) == {f: 4, p: 0}
    assert group.end([f, p]) == {f: 10, p: 0}
    assert group.committed_or_earliest() == {f: 4, p: 0}

    with pytest.raises(BackupError, match=r"offset 2 but Kafka's earliest is 4: 2 events"):
        set_replay_offsets(topics, manifest([PartitionOffset(*f, 2)]), force=False)
    assert group.committed_or_earliest() == {f: 4, p: 0}  # nothing set
    with pytest.raises(BackupError, match=r"offset 12 but the partition ends at 10"):
        set_replay_offsets(topics, manifest([PartitionOffset(*f, 12)]), force=False)

    offsets, end = set_replay_offsets(topics, manifest([PartitionOffset(*f, 7)]), force=False)
    assert offsets == {f: 7, p: 0} and end == {f: 10, p: 0}
    assert group.committed_or_earliest() == {f: 7, p: 0}
    # --force: from the earliest still held.
    offsets, _end = set_replay_offsets(topics, manifest([PartitionOffset(*f, 1)]), force=True)
    assert offsets == {f: 4, p: 0}
    assert group.committed_or_earliest() == {f: 4, p: 0}


def test_restore_refuses_while_the_group_has_a_member(topics: Settings) -> None:
    consumer = Consumer({**topics.kafka_client_config(), "group.id": topics.consumer_group})
    consumer.subscribe([topics.features_topic])
    try:
        assert wait_until(lambda: bool(consumer.poll(0.2) or consumer.assignment()), 60)
        with pytest.raises(BackupError, match="has 1 member"):
            set_replay_offsets(
                topics, manifest([PartitionOffset(topics.features_topic, 0, 7)]), False
            )
    finally:
        consumer.close()
    assert GroupOffsets(topics).committed_or_earliest()[(topics.features_topic, 0)] == 4


def test_a_stopped_bridges_static_membership_is_waited_out(topics: Settings) -> None:
    # A bridge joins with group.instance.id; closing it does not leave the group (static
    # membership lasts the session timeout), as after `fstore down` before a restore.
    consumer = Consumer(
        {
            **topics.kafka_client_config(),
            "group.id": topics.consumer_group,
            "group.instance.id": "bridge-under-test",
            "session.timeout.ms": int(topics.bridge_session_timeout_s * 1000),
        }
    )
    consumer.subscribe([topics.features_topic])
    assert wait_until(lambda: bool(consumer.poll(0.2) or consumer.assignment()), 60)
    consumer.close()
    group = GroupOffsets(topics)
    with pytest.raises(BackupError, match="has 1 member"):
        group.require_empty(static_expiry_s=0.0)  # still listed: not waited for

    group.require_empty(static_expiry_s=topics.bridge_session_timeout_s + 5.0)

    f = (topics.features_topic, 0)
    set_replay_offsets(topics, manifest([PartitionOffset(f[0], 0, 7)]), False)
    assert group.committed_or_earliest()[f] == 7
