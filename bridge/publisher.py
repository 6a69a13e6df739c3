"""The EventPublisher (featurestore.ingest.publisher) on Kafka: what PushFeatures sends with."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, Producer

from bridge.producer import producer_config
from featurestore import metrics
from featurestore.errors import ServiceError
from featurestore.ingest.sources import Message
from featurestore.logs import quoted
from featurestore.settings import Settings

log = logging.getLogger(__name__)


class _Deliveries:
    """Delivery reports of one publish call (callbacks run in whichever thread polls)."""

    def __init__(self, expected: int) -> None:
        self.left = expected
        self.failures: list[str] = []
        self.done = threading.Event()
        self._lock = threading.Lock()

    def report(self, err: KafkaError | None, _msg: object) -> None:
        with self._lock:
            if err is not None:
                self.failures.append(err.str())
            self.left -= 1
            if self.left == 0:
                self.done.set()


class KafkaEventPublisher:
    """Publishes messages to the features topic and waits for each one's delivery."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.features_topic
        # The caller waits for delivery: send at once rather than linger for more.
        self.producer = Producer(producer_config(settings, linger_ms=0))

    def publish(self, messages: Sequence[Message], *, timeout_s: float) -> int:
        """Send every message and wait until the broker acknowledged each; events sent."""
        deadline = time.monotonic() + timeout_s
        deliveries = _Deliveries(len(messages))
        for message in messages:
            self._produce(message, deliveries, deadline)
        # Several calls share the producer: each polls until its own messages are in
        # (a flush would also wait for every other caller's).
        while not deliveries.done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                metrics.FAILURES.labels("grpc", "push_timeout").inc()
                log.warning(
                    "push_timeout messages=%d undelivered=%d", len(messages), deliveries.left
                )
                raise ServiceError(
                    f"Kafka did not confirm {deliveries.left} message(s) within {timeout_s:.1f}s"
                )
            self.producer.poll(min(left, 0.05))
        if deliveries.failures:
            metrics.FAILURES.labels("grpc", "push_failed").inc()
            log.warning(
                "push_failed messages=%d failed=%d first=%s",
                len(messages),
                len(deliveries.failures),
                quoted(deliveries.failures[0]),
            )
            raise ServiceError(f"{len(deliveries.failures)} message(s) not delivered to Kafka")
        rows = sum(message.rows for message in messages)
        log.info("push_delivered messages=%d events=%d", len(messages), rows)
        return rows

    def _produce(self, message: Message, deliveries: _Deliveries, deadline: float) -> None:
        while True:
            try:
                self.producer.produce(self.topic, message.payload, on_delivery=deliveries.report)
            except BufferError:  # local queue full: let deliveries drain, then retry
                if time.monotonic() > deadline:
                    raise ServiceError("the Kafka producer's queue stayed full") from None
                self.producer.poll(0.05)
            else:
                return

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is still queued (at shutdown)."""
        self.producer.flush(timeout_s)
