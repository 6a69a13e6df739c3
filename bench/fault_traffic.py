"""Steady traffic for the fault runs: events into Kafka, latest-features reads through the
DuckDB service, Predict over gRPC; each call's outcome kept on a timeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import grpc
from confluent_kafka import KafkaError, Producer

from featurestore.ingest.sources import FileSource
from featurestore.reads.features import latest_features
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from tasks.app import configure
from tasks.client.query import CeleryReader

FEATURES = 10
ROWS_PER_MESSAGE = 200
CHUNK = 100_000  # events per file of the stream (a multiple of ROWS_PER_MESSAGE)
# Short deadlines: a call's failure shows within a second or two of the fault (a read
# prefetched by a worker that is then killed is never answered).
READ_TIMEOUT_S = 2.0
PREDICT_TIMEOUT_S = 1.0

CHECKSUM_SQL = (
    "SELECT count(*) AS n, coalesce(sum(hash(entity_id, feature_name, value, "
    "event_timestamp)), 0)::VARCHAR AS checksum FROM {source} WHERE starts_with(entity_id, ?)"
)


# Event i's time: its index in milliseconds, so a time tells when in the stream it was sent.
EVENT_TIME_SQL = "TIMESTAMP '2024-01-01' + to_microseconds(({i}) * 1000)"


def events_sql(tag: str, rows: int, entities: int, start: int = 0) -> str:
    """Events start..rows-1: entities are updated again and again (so the online store must
    keep the newest of many batches), each (entity, feature, time) once, times increasing."""
    return f"""SELECT '{tag}' || ((i // {FEATURES}) % {entities}) AS entity_id,
                      'feature_' || (i % {FEATURES}) AS feature_name,
                      round(((hash(i) % 1000000) / 1000.0)::DOUBLE, 3) AS value,
                      {EVENT_TIME_SQL.format(i="i")} AS event_timestamp
               FROM range({start}, {rows}) t(i)"""


def write_events(path: Path, tag: str, start: int, stop: int, entities: int) -> None:
    """Events start..stop-1 of the stream as a Parquet file, in event order."""
    with duckdb.connect() as con:
        sql = events_sql(tag, stop, entities, start)
        con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")


def expected_checksum(tag: str, rows: int, entities: int) -> tuple[int, str]:
    """Count and checksum of the first `rows` events, the way DuckDB computes it stored."""
    with duckdb.connect() as con:
        source = f"({events_sql(tag, rows, entities)})"
        row = con.execute(CHECKSUM_SQL.format(source=source), [tag]).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


@dataclass
class Timeline:
    """Calls of one kind: (wall start, wall end, ok, error name)."""

    calls: list[tuple[float, float, bool, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, began: float, ok: bool, error: str = "") -> None:
        """Record one call that began at `began` and ends now."""
        with self.lock:
            self.calls.append((began, time.time(), ok, error))

    def failures(self, start: float, end: float) -> tuple[float, int, list[str]]:
        """Within [start, end): seconds from the first failed call's start to the last
        failed call's end, the number of failed calls, and their kinds of error."""
        with self.lock:
            failed = [c for c in self.calls if start <= c[0] < end and not c[2]]
        if not failed:
            return 0.0, 0, []
        return max(c[1] for c in failed) - failed[0][0], len(failed), sorted({c[3] for c in failed})

    def ok_since(self, since: float) -> bool:
        """A call that began after `since` succeeded."""
        with self.lock:
            return any(c[2] and c[0] >= since for c in reversed(self.calls[-50:]))


class Traffic:
    """Three threads: a producer at `rate` events/s, reads and Predicts at their rates."""

    def __init__(
        self,
        settings: Settings,
        stream: tuple[Path, str, int],
        read_entities: list[str],
        predict: tuple[str, list[str]],
        *,
        rate: float,
        reads_per_s: float = 10.0,
        predicts_per_s: float = 20.0,
    ) -> None:
        self.settings = settings
        # The stream is written and sent a chunk at a time (a file of a whole run's events
        # took the producer's in-memory validation to 1.3 GB).
        self.folder, self.tag, self.entities = stream
        self.read_entities = read_entities
        self.model_id, self.predict_entities = predict
        self.rate, self.reads_per_s, self.predicts_per_s = rate, reads_per_s, predicts_per_s
        self.reads, self.predicts = Timeline(), Timeline()
        self.sent_rows = 0
        self.delivered_rows = 0
        self.delivery_errors: list[str] = []
        self.stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._produce, name="produce", daemon=True),
            threading.Thread(target=self._read, name="read", daemon=True),
            threading.Thread(target=self._predict, name="predict", daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _on_delivery(self, rows: int) -> Callable[[KafkaError | None, object], None]:
        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is None:
                self.delivered_rows += rows
            else:
                self.delivery_errors.append(err.name())

        return delivered

    def _produce(self) -> None:
        # Idempotent, as the project's producer: a plain one retrying across a broker kill
        # can write a message twice.
        producer = Producer(
            {
                **self.settings.kafka_client_config(),
                "linger.ms": 5,
                "enable.idempotence": True,
            }
        )
        began = time.monotonic()
        while not self.stop.is_set():
            path = self.folder / f"stream-{self.sent_rows}.parquet"
            write_events(path, self.tag, self.sent_rows, self.sent_rows + CHUNK, self.entities)
            source = FileSource(path, ROWS_PER_MESSAGE)
            for message in source.messages():
                if self.stop.is_set():
                    break
                producer.produce(
                    self.settings.features_topic,
                    message.payload,
                    on_delivery=self._on_delivery(message.rows),
                )
                self.sent_rows += message.rows
                producer.poll(0)
                self.stop.wait(max(0.0, began + self.sent_rows / self.rate - time.monotonic()))
            source.close()
            path.unlink()
        remaining = producer.flush(300)
        if remaining:
            self.delivery_errors.append(f"{remaining} messages undelivered after 300 s")

    def _paced(self, per_s: float, call: Callable[[int], None], timeline: Timeline) -> None:
        i = 0
        while not self.stop.is_set():
            began_mono, began = time.monotonic(), time.time()
            try:
                call(i)
            except grpc.RpcError as exc:
                timeline.record(began, False, exc.code().name)
            except Exception as exc:  # noqa: BLE001 - any failure counts as a failed call
                timeline.record(began, False, type(exc).__name__)
            else:
                timeline.record(began, True)
            i += 1
            self.stop.wait(max(0.0, began_mono + 1 / per_s - time.monotonic()))

    def _read(self) -> None:
        reader = CeleryReader(configure(self.settings), READ_TIMEOUT_S)
        entities = self.read_entities

        def read(i: int) -> None:
            latest_features(reader, entities[i % len(entities)], timeout=READ_TIMEOUT_S)

        self._paced(self.reads_per_s, read, self.reads)

    def _predict(self) -> None:
        channel = grpc.insecure_channel(f"localhost:{self.settings.grpc_port}")
        stub = pb_grpc.FeatureStoreStub(channel)
        entities = self.predict_entities

        def predict(i: int) -> None:
            request = pb.PredictRequest(
                model_id=self.model_id, entity_ids=[entities[i % len(entities)]]
            )
            stub.Predict(request, timeout=PREDICT_TIMEOUT_S)

        self._paced(self.predicts_per_s, predict, self.predicts)
        channel.close()
