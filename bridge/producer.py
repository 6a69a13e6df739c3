"""The file producer: feature files -> validated messages (JSON, or Arrow IPC for bulk
loads) -> the features topic."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Producer

from featurestore.ingest.event_decode import ARROW_CONTENT_TYPE, JSON_CONTENT_TYPE, encode_arrow
from featurestore.ingest.sources import FileSource, Message, Reject, expand
from featurestore.progress import Progress
from featurestore.settings import Settings

log = logging.getLogger(__name__)

REJECTS_SHOWN = 50


def producer_config(settings: Settings, *, linger_ms: int) -> dict[str, object]:
    """The config of a features-topic producer (file producer and PushFeatures alike)."""
    return {
        **settings.kafka_client_config(),
        "linger.ms": linger_ms,
        "compression.type": "lz4",
        # A retry inside librdkafka (broker restart, lost ack) never writes a message twice.
        "enable.idempotence": True,
        "message.max.bytes": settings.max_message_bytes + 4096,
        "logger": logging.getLogger("bridge.kafka"),
    }


@dataclass
class ProduceReport:
    """Totals of one producer run."""

    files: int = 0
    rows_read: int = 0
    rows_sent: int = 0
    rows_rejected: int = 0
    messages: int = 0
    rejects: list[Reject] = field(default_factory=list)

    def summary(self) -> str:
        """One line for humans and logs."""
        return (
            f"files={self.files} rows_read={self.rows_read} rows_sent={self.rows_sent} "
            f"rows_rejected={self.rows_rejected} messages={self.messages}"
        )


def split_to_fit(message: Message, max_bytes: int) -> list[Message]:
    """Halve a message until each part fits under the broker's message size limit."""
    if len(message.payload) <= max_bytes or message.rows <= 1:
        return [message]
    rows = orjson.loads(message.payload)
    middle = len(rows) // 2
    halves = [rows[:middle], rows[middle:]]
    return [
        part
        for half in halves
        for part in split_to_fit(Message(orjson.dumps(half), len(half)), max_bytes)
    ]


def arrow_messages(table: pa.Table, max_bytes: int) -> list[Message]:
    """A table as Arrow content-type messages, halved until each fits under max_bytes."""
    payload = encode_arrow(table)
    if len(payload) <= max_bytes or table.num_rows <= 1:
        return [Message(payload, table.num_rows)]
    middle = table.num_rows // 2
    return [
        *arrow_messages(table.slice(0, middle), max_bytes),
        *arrow_messages(table.slice(middle), max_bytes),
    ]


class FileProducer:
    """Publishes feature files to Kafka, with a progress bar and a summary.

    content_type JSON (the default) suits every consumer; ARROW_CONTENT_TYPE is for bulk
    loads: the bridge then checks whole columns instead of decoding each event.
    """

    def __init__(
        self,
        settings: Settings,
        rows_per_message: int = 500,
        content_type: str = JSON_CONTENT_TYPE,
    ) -> None:
        if content_type not in (JSON_CONTENT_TYPE, ARROW_CONTENT_TYPE):
            raise ValueError(f"unknown content type {content_type!r}")
        self.settings = settings
        self.rows_per_message = rows_per_message
        self.max_bytes = settings.max_message_bytes
        self.content_type = content_type
        # JSON messages go without the header, as they always have.
        self._headers: list[tuple[str, str | bytes | None]] | None = (
            [("content-type", content_type.encode())] if content_type != JSON_CONTENT_TYPE else None
        )
        self.producer = Producer(producer_config(settings, linger_ms=20))
        self._failures: list[str] = []

    def _delivered(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._failures.append(err.str())

    def _send(self, message: Message) -> None:
        while True:
            try:
                self.producer.produce(
                    self.settings.features_topic,
                    message.payload,
                    headers=self._headers,
                    on_delivery=self._delivered,
                )
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.1)
            else:
                return

    def _messages(self, source: FileSource) -> Iterator[tuple[int, list[Message]]]:
        """Rows of each message of rows_per_message rows, and its parts that fit under
        max_bytes."""
        if self.content_type == ARROW_CONTENT_TYPE:
            for table in source.tables():
                yield table.num_rows, arrow_messages(table, self.max_bytes)
        else:
            for message in source.messages():
                yield message.rows, split_to_fit(message, self.max_bytes)

    def run(self, paths: list[Path], *, strict: bool = False) -> ProduceReport:
        """Validate every file; send the accepted rows (none at all if strict and any
        row is rejected)."""
        files = expand(paths)
        report = ProduceReport(files=len(files))
        sources = [FileSource(path, self.rows_per_message) for path in files]
        try:
            totals = [source.counts() for source in sources]
            report.rows_read = sum(a + r for a, r in totals)
            report.rows_rejected = sum(r for _a, r in totals)
            for source in sources:
                report.rejects.extend(source.rejects())
            if strict and report.rows_rejected:
                return report
            with Progress("produce", sum(a for a, _r in totals)) as bar:
                for source in sources:
                    for rows, parts in self._messages(source):
                        for part in parts:
                            self._send(part)
                            report.messages += 1
                        report.rows_sent += rows
                        bar.update(rows)
                        self.producer.poll(0)
            self.producer.flush(120)
        finally:
            for source in sources:
                source.close()
        if self._failures:
            raise KafkaException(
                f"{len(self._failures)} message(s) not delivered: {self._failures[0]}"
            )
        log.info("produce_done %s", report.summary())
        return report
