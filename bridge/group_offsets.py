"""The bridge's consumer group seen from outside: its committed offsets, the partitions'
earliest and end offsets, whether it has members, and setting its offsets (for a restore)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from featurestore.errors import BackupError, ServiceError
from featurestore.settings import Settings

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]
TIMEOUT_S = 15.0
R = TypeVar("R")


# Answered while the broker loads its group coordinator, just after it started (as a
# restore may have just started it): worth asking again.
_TRANSIENT = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
}


def _transient(error: KafkaError) -> bool:
    # The group offsets calls wrap the broker's error in a parse failure: its text tells.
    return bool(
        error.retriable() or error.code() in _TRANSIENT or "coordinator" in error.str().lower()
    )


def _result(future: Future[Any], what: str) -> Any:
    """An admin call's result; a ServiceError naming the call when Kafka fails it."""
    try:
        return future.result()
    except KafkaException as exc:
        error = exc.args[0]
        if _transient(error):
            raise _Transient from None
        raise ServiceError(f"Kafka failed {what}: {error.str()}") from None


class _Transient(Exception):  # noqa: N818 - a signal, not an error
    """Kafka answered with an error that passes: ask again."""


def _retrying(call: Callable[[], R], what: str) -> R:
    """call(), asked again while Kafka's answer is transient, for up to TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return call()
        except _Transient:
            if time.monotonic() > deadline:
                raise ServiceError(f"Kafka failed {what}: its coordinator is not ready") from None
            log.info("kafka_admin_retry call=%s", what.replace(" ", "_"))
            time.sleep(0.5)


class GroupOffsets:
    """Admin calls about the bridge's group (settings.consumer_group) on its topics."""

    def __init__(self, settings: Settings) -> None:
        self.group = settings.consumer_group
        self.topics = [settings.features_topic, settings.predictions_topic]
        self.admin = AdminClient(
            {**settings.kafka_client_config(), "socket.timeout.ms": int(TIMEOUT_S * 1000)}
        )

    def partitions(self) -> list[tuple[str, int]]:
        """Every partition of the bridge's topics that exists."""
        try:
            metadata = self.admin.list_topics(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise ServiceError(f"Kafka does not answer: {exc.args[0].name()}") from None
        return sorted(
            (topic, partition)
            for topic in self.topics
            if topic in metadata.topics
            for partition in metadata.topics[topic].partitions
        )

    def _offsets(self, spec: OffsetSpec, partitions: list[tuple[str, int]]) -> Offsets:
        wanted = {TopicPartition(t, p): spec for t, p in partitions}
        if not wanted:
            return {}

        def call() -> Offsets:
            futures = self.admin.list_offsets(wanted, request_timeout=TIMEOUT_S)
            return {
                (tp.topic, tp.partition): int(_result(f, "to list offsets").offset)
                for tp, f in futures.items()
            }

        return _retrying(call, "to list offsets")

    def earliest(self, partitions: list[tuple[str, int]]) -> Offsets:
        """The first offset Kafka still holds of each partition (older ones are past retention)."""
        return self._offsets(OffsetSpec.earliest(), partitions)  # type: ignore[no-untyped-call]

    def end(self, partitions: list[tuple[str, int]]) -> Offsets:
        """The offset the next message of each partition will get."""
        return self._offsets(OffsetSpec.latest(), partitions)  # type: ignore[no-untyped-call]

    def committed_or_earliest(self) -> Offsets:
        """Where the bridge would start each partition by Kafka alone: the group's committed
        offset, or the earliest when it has none (the consumer's auto.offset.reset)."""
        partitions = self.partitions()
        request = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(t, p) for t, p in partitions]
        )
        what = "to list the group's offsets"

        def call() -> Any:
            futures = self.admin.list_consumer_group_offsets([request], request_timeout=TIMEOUT_S)
            return _result(futures[self.group], what).topic_partitions

        listed = _retrying(call, what)
        committed = {
            (tp.topic, tp.partition): int(tp.offset) for tp in listed or [] if tp.offset >= 0
        }
        earliest = self.earliest([key for key in partitions if key not in committed])
        return {**earliest, **committed}

    def require_empty(self, static_expiry_s: float = 0.0) -> None:
        """BackupError when a consumer (a bridge) is in the group: its offsets can't be set.
        A static member (a bridge's group.instance.id) stays listed after its bridge stopped,
        until its session times out: waited for, up to static_expiry_s."""
        what = "to describe the group"

        def call() -> Any:
            futures = self.admin.describe_consumer_groups([self.group], request_timeout=TIMEOUT_S)
            return _result(futures[self.group], what).members

        deadline = time.monotonic() + static_expiry_s
        while True:
            members = _retrying(call, what) or []
            static = [m for m in members if m.group_instance_id]
            if not members or len(static) < len(members) or time.monotonic() >= deadline:
                break
            log.info(
                "group_waiting_for_static_members group=%s members=%s",
                self.group,
                ",".join(sorted(str(m.group_instance_id) for m in static)),
            )
            time.sleep(1.0)
        if members:
            hosts = ", ".join(sorted({str(m.host) for m in members}))
            raise BackupError(
                f"the consumer group {self.group} has {len(members)} member(s) ({hosts}): "
                "stop every bridge first"
            )

    def reset(self, offsets: Offsets) -> None:
        """Set the group's committed offsets (the group must be empty)."""
        request = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        )
        what = "to set the group's offsets"

        def call() -> list[tuple[TopicPartition, KafkaError]]:
            futures = self.admin.alter_consumer_group_offsets([request], request_timeout=TIMEOUT_S)
            result = _result(futures[self.group], what)
            failed = [(tp, tp.error) for tp in result.topic_partitions or [] if tp.error]
            if any(_transient(error) for _tp, error in failed):
                raise _Transient
            return failed

        failed = _retrying(call, what)
        if failed:
            names = ", ".join(f"{tp.topic}[{tp.partition}]: {e.str()}" for tp, e in failed)
            raise BackupError(f"Kafka refused the group's new offsets: {names}")
        for (topic, partition), offset in sorted(offsets.items()):
            log.info(
                "group_offset_set group=%s topic=%s partition=%d offset=%d",
                self.group,
                topic,
                partition,
                offset,
            )
