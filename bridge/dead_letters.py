"""The dead-letter topic: messages the bridge cannot take, and write batches that failed
every attempt, each with the reason in a header."""

from __future__ import annotations

import logging

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bridge.inflight import Sent
from featurestore import metrics
from featurestore.logs import quoted
from featurestore.settings import Settings

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


def _headers(reason: str, topic: str, partition: int, offset: int) -> Headers:
    return [
        ("reason", reason.encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


def source(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed message."""
    partition, offset = msg.partition(), msg.offset()
    return (
        msg.topic() or "",
        -1 if partition is None else partition,
        -1 if offset is None else offset,
    )


class DeadLetters:
    """Publishes dead letters and tells whether all of them are safely in Kafka."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.dead_letter_topic
        # Each source topic has a dead-letter topic of its own; features' is the default.
        self.topics = {settings.predictions_topic: settings.predictions_dead_letter_topic}
        self.producer = Producer(
            {
                **settings.kafka_client_config(),
                "linger.ms": 50,
                "logger": logging.getLogger("bridge.kafka"),
            }
        )
        self.failures = 0

    def message(self, msg: Message, reason: str) -> None:
        """A consumed message that is not valid: sent on as it came, with the reason."""
        metrics.BRIDGE_MESSAGES.labels("dead_letter").inc()
        topic, partition, offset = source(msg)
        metrics.BRIDGE_DEAD_LETTERS.labels(topic, "invalid_message").inc()
        log.warning(
            "dead_letter topic=%s partition=%d offset=%d reason=%s",
            topic,
            partition,
            offset,
            quoted(reason),
        )
        self.producer.produce(
            self.topics.get(topic, self.topic),
            value=msg.value(),
            key=msg.key(),
            headers=_headers(reason, topic, partition, offset),
            on_delivery=self._on_delivery,
        )
        self.producer.poll(0)

    def batch(self, sent: Sent, reason: str) -> None:
        """A write batch that failed every attempt: its events, one message per source
        offset (as they were consumed), delivered before this returns (raises if not)."""
        span = sent.span
        log.error(
            "batch_dead_lettered topic=%s partition=%d offsets=%d-%d reason=%s",
            span.topic,
            span.partition,
            span.first_offset,
            span.last_offset,
            quoted(reason),
        )
        messages = sent.kind.by_offset(sent.payload)
        metrics.BRIDGE_DEAD_LETTERS.labels(span.topic, "write_failed").inc(len(messages))
        for offset, events in messages.items():
            self.producer.produce(
                self.topics.get(span.topic, self.topic),
                value=orjson.dumps(events),
                headers=_headers(reason, span.topic, span.partition, offset),
                on_delivery=self._on_delivery,
            )
        self.delivered()

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failures += 1
            metrics.BRIDGE_ERRORS.labels("dead_letter").inc()
            log.error("dead_letter_failed error=%s", quoted(err.str()))

    def delivered(self) -> None:
        """Block until every dead letter so far is in Kafka; raise if any was not.

        A batch spanning a dead-lettered offset may commit (and so move resume_offset past
        it) only once that dead letter is safe; the raise restarts the consumer, which
        reads the message again.
        """
        if self.producer.flush(30) > 0 or self.failures:
            raise KafkaException(
                KafkaError(KafkaError._MSG_TIMED_OUT, "dead letters not delivered")
            )

    def close(self) -> None:
        """Deliver what is queued (best effort, at shutdown)."""
        self.producer.flush(30)
