"""What the beat program samples every few seconds: Celery queue lengths in Redis, and the
bridge consumer group's committed offsets and lag in Kafka.

The lag is read from Kafka by this outside observer, not by the bridge: a stopped or hung
bridge exports nothing, and that is when the lag matters.
"""

from __future__ import annotations

import logging
import threading

import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from featurestore import metrics
from featurestore.settings import Settings

log = logging.getLogger(__name__)

# Often enough for a 2-minute stall alert, and 3 Redis + 2 Kafka round trips per sample.
SAMPLE_INTERVAL_S = 5.0
# kombu's Redis transport keeps a queue's tasks sent with priority 3, 6 or 9 in lists of
# their own, '<queue>\x06\x16<priority>'; nothing here sends priorities, but they are counted.
_PRIORITY_LISTS = ("", "\x06\x163", "\x06\x166", "\x06\x169")
_TIMEOUT_S = 3.0


class Monitor:
    """Samples queue lengths and consumer lag into the beat program's metrics."""

    def __init__(self, settings: Settings) -> None:
        self.queues = (settings.write_queue, settings.read_queue, settings.model_sync_queue)
        self.topics = (settings.features_topic, settings.predictions_topic)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=_TIMEOUT_S)
        # Never subscribes, so never joins the group: it only reads the group's offsets.
        self.kafka = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": settings.consumer_group,
                "enable.auto.commit": False,
                "logger": logging.getLogger("tasks.monitor.kafka"),
            }
        )

    def sample_queues(self) -> None:
        """Set fstore_celery_queue_length of each queue (the sum of its Redis lists)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for queue in self.queues:
                for suffix in _PRIORITY_LISTS:
                    pipe.llen(queue + suffix)
            lengths = pipe.execute()
        except redis.RedisError as exc:
            self._down("redis", exc)
            return
        metrics.DEPENDENCY_UP.labels("redis").set(1)
        width = len(_PRIORITY_LISTS)
        for i, queue in enumerate(self.queues):
            metrics.CELERY_QUEUE_LENGTH.labels(queue).set(sum(lengths[i * width : (i + 1) * width]))

    def _partitions(self) -> list[TopicPartition]:
        partitions: list[TopicPartition] = []
        for topic in self.topics:
            found = self.kafka.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
            if found is not None and found.error is None:
                partitions.extend(TopicPartition(topic, p) for p in sorted(found.partitions))
        return partitions

    def sample_lag(self) -> None:
        """Set each partition's committed offset and lag (high watermark minus committed; a
        partition the group never committed counts from its low watermark)."""
        try:
            samples = []
            for part in self.kafka.committed(self._partitions(), timeout=_TIMEOUT_S):
                low, high = self.kafka.get_watermark_offsets(part, timeout=_TIMEOUT_S)
                committed = part.offset if part.offset >= 0 else low
                lag = max(high - committed, 0)
                samples.append((part.topic, str(part.partition), committed, lag))
        except KafkaException as exc:
            self._down("kafka", exc)
            # No lag while it cannot be read: the Kafka-unreachable alert speaks instead.
            metrics.KAFKA_CONSUMER_LAG.clear()
            metrics.KAFKA_COMMITTED_OFFSET.clear()
            return
        metrics.DEPENDENCY_UP.labels("kafka").set(1)
        for topic, partition, committed, lag in samples:
            metrics.KAFKA_COMMITTED_OFFSET.labels(topic, partition).set(committed)
            metrics.KAFKA_CONSUMER_LAG.labels(topic, partition).set(lag)

    def _down(self, dependency: str, exc: Exception) -> None:
        metrics.DEPENDENCY_UP.labels(dependency).set(0)
        metrics.FAILURES.labels("beat", f"{dependency}_sample").inc()
        log.warning("monitor_sample_failed dependency=%s error=%s", dependency, type(exc).__name__)

    def run(self, stop: threading.Event, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        """Sample every interval_s until stop is set."""
        while not stop.is_set():
            self.sample_queues()
            self.sample_lag()
            stop.wait(interval_s)
        self.close()

    def close(self) -> None:
        """Close the Kafka consumer and the Redis client."""
        self.kafka.close()
        self.redis.close()


def start(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Run a Monitor in a daemon thread until stop is set."""
    thread = threading.Thread(
        target=Monitor(settings).run, args=(stop,), name="monitor", daemon=True
    )
    thread.start()
    return thread
