"""The bridge's consumer loop: Kafka messages -> validated batches -> Celery write tasks.

Two topics, each with its kind of rows (bridge.batcher.BatchKind): feature events, and the
prediction records of the serving processes. Offsets are committed to Kafka only after
every batch up to them is committed in DuckDB.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from bridge.batcher import FEATURES, PREDICTIONS, Batcher
from bridge.dead_letters import DeadLetters, source
from bridge.inflight import InFlight, WriterEpoch
from featurestore import constants, metrics
from featurestore.errors import ValidationError
from featurestore.logs import quoted
from featurestore.settings import Settings

log = logging.getLogger(__name__)

_BROKER_ERRORS = (OperationalError, RedisError, ConnectionError, OSError)


def content_type(msg: Message) -> str | None:
    """The message's Kafka header content-type (the last one given), None without one."""
    headers = msg.headers() or []
    # A consumed message's headers are a list of pairs (the stub also allows a dict).
    pairs = headers.items() if isinstance(headers, dict) else headers
    found = None
    for key, value in pairs:
        if key.lower() == "content-type" and value is not None:
            found = value.decode(errors="replace") if isinstance(value, bytes) else value
    return found


def kafka_time_ms(msg: Message) -> int | None:
    """The message's Kafka timestamp in ms (producer's or broker's), None when it has none."""
    kind, value = msg.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else int(value)


class _StoppedWhileSending(Exception):  # noqa: N818 - a signal, not an error
    """The stop event was set while a batch could not be sent."""


class Bridge:
    """Consumes the features topic and turns it into write tasks until stopped."""

    def __init__(
        self,
        settings: Settings,
        app: Celery,
        stop: threading.Event,
        *,
        instance_id: str | None = None,
        writer_epoch: WriterEpoch | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.stop = stop
        self.kinds = {settings.features_topic: FEATURES, settings.predictions_topic: PREDICTIONS}
        self.batcher = Batcher(
            settings.batch_max_rows,
            settings.batch_max_wait_s,
            self.kinds,
            {settings.predictions_topic: settings.prediction_batch_max_wait_s},
        )
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": settings.consumer_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # Bounds librdkafka's prefetch so memory stays flat when the writer is slow.
                "queued.max.messages.kbytes": 16384,
                "logger": logging.getLogger("bridge.kafka"),
                # Static membership: a restarted bridge with the same id takes its partitions
                # back at once; without one, a SIGKILLed bridge's partitions stay held by
                # its dead member for the session timeout (make faults: README, Faults).
                **(
                    {
                        "group.instance.id": instance_id,
                        "session.timeout.ms": int(settings.bridge_session_timeout_s * 1000),
                    }
                    if instance_id
                    else {}
                ),
            }
        )
        self.dead_letters = DeadLetters(settings)
        self.inflight = InFlight(
            app,
            settings.write_queue,
            settings.batch_resend_after_s,
            max_attempts=settings.batch_max_attempts,
            give_up=self.dead_letters.batch,
            writer_epoch=writer_epoch,
        )
        self.paused = False
        self._to_commit: dict[tuple[str, int], int] = {}

    # -- assignment ----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        for part in committed:
            start = part.offset
            if start < 0:
                start = consumer.get_watermark_offsets(part, timeout=30)[0]
            resume = self._ask_resume_offset(part.topic, part.partition, start)
            part.offset = max(start, resume)
            log.info(
                "partition_assigned topic=%s partition=%d kafka_committed=%d start=%d",
                part.topic,
                part.partition,
                start,
                part.offset,
            )
        consumer.assign(committed)

    def _ask_resume_offset(self, topic: str, partition: int, committed: int) -> int:
        """Ask the DuckDB service where the partition's committed offsets end."""
        while not self.stop.is_set():
            try:
                result = self.app.send_task(
                    constants.TASK_RESUME_OFFSET,
                    args=[topic, partition, committed],
                    queue=self.settings.read_queue,
                )
                return int(result.get(timeout=self.settings.query_timeout_s))
            except Exception as exc:  # noqa: BLE001 - any failure: wait and ask again
                metrics.BRIDGE_ERRORS.labels("resume_offset").inc()
                log.warning(
                    "resume_offset_unavailable topic=%s partition=%d error=%s",
                    topic,
                    partition,
                    type(exc).__name__,
                )
                self.stop.wait(2.0)
        return committed

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for part in partitions:
            self.batcher.drop(part.topic, part.partition)
            self.inflight.forget_partition(part.topic, part.partition)
            self._to_commit.pop((part.topic, part.partition), None)
            log.info("partition_revoked topic=%s partition=%d", part.topic, part.partition)

    # -- one message ---------------------------------------------------------------------
    def _take(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            metrics.BRIDGE_ERRORS.labels("kafka").inc()
            # A consumer's fatal error comes as code _FATAL, its fatal() flag unset.
            if error.fatal() or error.code() == KafkaError._FATAL:
                # The consumer is dead for good (a static member fenced after a broker
                # outage longer than its session): bridge.main starts a new one.
                raise KafkaException(error)
            log.warning("kafka_error code=%s reason=%s", error.name(), quoted(error.str()))
            return
        kind = self.kinds.get(msg.topic() or "", FEATURES)
        try:
            events = kind.parse(msg.value(), content_type(msg))
        except ValidationError as exc:
            self.dead_letters.message(msg, str(exc))
            events = None
        else:
            metrics.BRIDGE_MESSAGES.labels("ok").inc()
        self.batcher.add(*source(msg), events, kafka_time_ms(msg))

    # -- the loop ------------------------------------------------------------------------
    def _send_due(self, *, flush: bool = False) -> None:
        for pending in self.batcher.due(flush=flush, idle=len(self.inflight) == 0):
            if pending.dead_letters:
                self.dead_letters.delivered()
            while True:
                try:
                    self.inflight.send(pending)
                    break
                except _BROKER_ERRORS as exc:
                    metrics.BRIDGE_ERRORS.labels("broker").inc()
                    log.warning(
                        "send_failed partition=%d offsets=%d-%d error=%s retry_in_s=2",
                        pending.partition,
                        pending.first_offset,
                        pending.last_offset,
                        type(exc).__name__,
                    )
                    if self.stop.wait(2.0):
                        # Nothing of this batch is committed: it is read again after a restart.
                        raise _StoppedWhileSending from None

    def _commit_done(self) -> None:
        try:
            commits = self.inflight.collect()
        except _BROKER_ERRORS as exc:
            metrics.BRIDGE_ERRORS.labels("result_backend").inc()
            log.warning("collect_failed error=%s", type(exc).__name__)
            self.stop.wait(1.0)
            return
        self._to_commit.update(commits)
        if not self._to_commit:
            return
        # No dead-letter flush here: a batch spanning dead letters was only sent once they
        # were delivered (_send_due), and only sent batches reach a commit.
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._to_commit.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            metrics.BRIDGE_ERRORS.labels("commit").inc()
            log.warning("commit_failed error=%s", exc.args[0].name())
            return
        self._to_commit.clear()
        metrics.BRIDGE_LAST_COMMIT.set_to_current_time()
        for part in offsets:
            log.info(
                "offsets_committed topic=%s partition=%d offset=%d",
                part.topic,
                part.partition,
                part.offset,
            )

    def _throttle(self) -> None:
        full = len(self.inflight) >= self.settings.max_batches_in_flight
        if full != self.paused:
            assignment = self.consumer.assignment()
            (self.consumer.pause if full else self.consumer.resume)(assignment)
            self.paused = full

    def _consume(self) -> list[Message]:
        """What has arrived, up to 100 messages; when nothing has, wait up to 50 ms for one."""
        # consume() returns only once it has num_messages or its timeout has passed: with
        # (100, 0.05) a lone event waited out the 50 ms before its batch could go
        # (bench.freshness_stages; README, Freshness).
        messages = self.consumer.consume(num_messages=100, timeout=0)
        return messages or self.consumer.consume(num_messages=1, timeout=0.05)

    def run(self) -> None:
        """Consume until the stop event is set, then finish in-flight batches and commit."""
        self.consumer.subscribe(
            list(self.kinds), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            while not self.stop.is_set():
                self._throttle()
                for msg in self._consume():
                    self._take(msg)
                self._send_due()
                self._commit_done()
            self._drain()
        except _StoppedWhileSending:
            log.warning("bridge_stopped_while_broker_down left_in_flight=%d", len(self.inflight))
        finally:
            self.dead_letters.close()
            self.consumer.close()

    def _drain(self) -> None:
        """On shutdown: send the open batches and wait for every batch to be committed."""
        self._send_due(flush=True)
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while len(self.inflight) and time.monotonic() < deadline:
            self._commit_done()
            time.sleep(0.05)
        log.info("bridge_drained left_in_flight=%d", len(self.inflight))
