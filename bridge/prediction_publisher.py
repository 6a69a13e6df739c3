"""The prediction log on Kafka: a PredictionSink whose buffer a background thread drains
into an idempotent producer (topic `predictions`, one message per record).

Serving never waits on Kafka: a call only lands in the buffer (featurestore.serving.
prediction_log). While Kafka is down the producer's own queue fills (bounded like the
buffer), then the buffer drops its oldest calls; both losses are counted. A record is never
produced twice: librdkafka's idempotence covers its own retries, and a record Kafka did not
confirm in time is counted as dropped, not resent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from featurestore import metrics
from featurestore.ingest.predictions import Record, encode_record
from featurestore.logs import quoted
from featurestore.serving import prediction_log
from featurestore.serving.predict import PredictionResult
from featurestore.serving.prediction_log import PredictionLog
from featurestore.serving.runtime import LoadedModel
from featurestore.settings import Settings

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.02
# A step encodes and produces at most RECORDS_PER_STEP records, taking calls from the buffer
# (at most CALLS_PER_STEP) while fewer than that wait, then, when more wait, sleeps, so that
# a serving thread waiting for the GIL (its Redis reply came while this one worked) takes
# it; otherwise that thread waits until this one blocks, up to the switch interval.
# A call of 100 entities is 100 records: encoded in one step they held the GIL about as
# long as the 100-entity Predict waiting behind it took for itself (make bench-serve).
# The sleep is what a step costs most: about 45 us of this thread's CPU (a context switch
# on a loaded machine) against 5-6 us to encode and produce a 10-feature record, so steps
# of one call each (as before) cost 55-65 us a 1-entity record, and steps of up to 16
# records 10-15 (bench.prediction_log_cost, publisher_cpu_us_per_record; README,
# Benchmarks). 16 records hold the GIL about 0.1 ms.
CALLS_PER_STEP = 16
RECORDS_PER_STEP = 16
YIELD_S = 0.0001
UNDELIVERED_LOG_EVERY_S = 10.0


class KafkaPredictionLog:
    """PredictionSink of the gRPC process: buffer in memory, Kafka in the background."""

    def __init__(
        self,
        settings: Settings,
        buffer: PredictionLog | None = None,
        *,
        calls_per_step: int = CALLS_PER_STEP,
        records_per_step: int = RECORDS_PER_STEP,
        yield_s: float = YIELD_S,
    ) -> None:
        self.settings = settings
        self.calls_per_step = calls_per_step
        self.records_per_step = records_per_step
        self.yield_s = yield_s
        self.buffer = buffer or PredictionLog.from_settings(settings)
        self.topic = settings.predictions_topic
        self.producer = self._producer()
        self._pending: deque[Record] = deque()  # records not yet produced
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._delivered = metrics.PREDICTION_LOG_RECORDS.labels("delivered")
        self._undelivered = metrics.PREDICTION_LOG_RECORDS.labels("dropped_undelivered")
        self._fatal = False
        self.undelivered = 0
        self._undelivered_logged = 0
        self._last_undelivered_log = 0.0

    def _producer(self) -> Producer:
        return Producer(
            {
                **self.settings.kafka_client_config(),
                # A retry inside librdkafka (broker restart, lost ack) never writes twice.
                "enable.idempotence": True,
                "linger.ms": self.settings.prediction_log_linger_ms,
                "compression.type": "lz4",
                # The producer's queue is bounded like the buffer; past it, records wait
                # in the buffer, which drops its oldest calls.
                "queue.buffering.max.messages": self.settings.prediction_log_buffer,
                "message.timeout.ms": int(self.settings.prediction_log_delivery_timeout_s * 1000),
                "error_cb": self._on_error,
                "logger": logging.getLogger("bridge.kafka"),
            }
        )

    # -- PredictionSink: called by serving threads, returns at once ---------------------------
    def log_predict(self, request_id: str, result: PredictionResult) -> None:
        """Buffer a Predict answer (when its model is logged and the call sampled)."""
        self.buffer.log_predict(request_id, result)

    def log_infer(
        self, request_id: str, model: LoadedModel, rows: np.ndarray, outputs: dict[str, np.ndarray]
    ) -> None:
        """Buffer a ModelInfer answer (when its model is logged and the call sampled)."""
        self.buffer.log_infer(request_id, model, rows, outputs)

    # -- the background thread ---------------------------------------------------------------
    def start(self) -> None:
        """Start draining the buffer into Kafka."""
        self._thread.start()
        log.info(
            "prediction_log_start topic=%s enabled=%s models=%s sample_rate=%s buffer=%d",
            self.topic,
            self.buffer.enabled,
            ",".join(sorted(self.buffer.models)) or "all",
            self.buffer.sample_rate,
            self.settings.prediction_log_buffer,
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                # The only way records leave this process: it must outlive a bug.
                log.exception("prediction_log_step_failed")
                self._stop.wait(1.0)

    def step(self, idle_wait_s: float = IDLE_POLL_S) -> int:
        """Move a few calls from the buffer into the producer and serve delivery reports;
        records handed to the producer. What Kafka cannot take yet stays in the bounded
        buffer."""
        if self._fatal:
            self._replace_producer()
        calls = 0
        while len(self._pending) < self.records_per_step and calls < self.calls_per_step:
            taken = self.buffer.take(1)
            if not taken:
                break
            self._pending.extend(prediction_log.records(taken[0]))
            calls += 1
        produced = 0
        full = False
        while self._pending and produced < self.records_per_step:
            message = encode_record(self._pending[0])
            try:
                self.producer.produce(self.topic, message, on_delivery=self._on_delivery)
            except BufferError:  # the producer's queue is full: Kafka is slow or down
                full = True
                break
            self._pending.popleft()
            produced += 1
        metrics.PREDICTION_LOG_BUFFERED.set(len(self.buffer))
        # Delivery reports come here; it waits (GIL released) only when nothing moved.
        if produced and not full:
            self.producer.poll(0)
            if self.yield_s and (self._pending or len(self.buffer)):
                time.sleep(self.yield_s)
        else:
            self.producer.poll(idle_wait_s)
        self._log_undelivered()
        return produced

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self._delivered.inc()
        else:
            self.undelivered += 1
            self._undelivered.inc()

    def _log_undelivered(self) -> None:
        now = time.monotonic()
        if self.undelivered == self._undelivered_logged:
            return
        if now - self._last_undelivered_log < UNDELIVERED_LOG_EVERY_S:
            return
        log.warning(
            "prediction_log_undelivered records=%d total=%d",
            self.undelivered - self._undelivered_logged,
            self.undelivered,
        )
        self._undelivered_logged, self._last_undelivered_log = self.undelivered, now

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = True
            log.error("prediction_log_producer_fatal error=%s", quoted(err.str()))
        else:
            log.debug("prediction_log_kafka_error code=%s", err.name())

    def _replace_producer(self) -> None:
        """A fatal idempotence error stops the producer for good: what it held is lost
        (counted as undelivered), a new one takes over."""
        lost = len(self.producer)
        self.producer.purge()
        self.producer.poll(0)
        self.producer = self._producer()
        self._fatal = False
        log.error("prediction_log_producer_replaced lost=%d", lost)

    def settled(self) -> bool:
        """True when nothing waits: buffer empty, every record confirmed or dropped."""
        return not len(self.buffer) and not self._pending and not len(self.producer)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread, send what is buffered and wait up to timeout_s for Kafka."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        deadline = time.monotonic() + timeout_s
        while (self._pending or len(self.buffer)) and time.monotonic() < deadline:
            self.step(idle_wait_s=0.05)
        self.producer.flush(max(0.0, deadline - time.monotonic()))
        log.info(
            "prediction_log_stop left_in_buffer=%d left_in_producer=%d",
            len(self.buffer) + len(self._pending),
            len(self.producer),
        )
