"""python -m bench.prediction_log_cpu: CPU of the prediction log per record, stage by stage.

No services: a Predict answer of 1 and of 100 entities (10 features, two outputs, as the
demo's model answers) goes through each stage of the log in turn, and each stage's CPU time
is taken on its own (thread CPU, so the machine's other load counts little):

- request thread: log_predict (switch, sampling, append to the buffer), per call;
- publisher thread: building the records, encoding them, producing them (librdkafka's
  queue; the broker's address answers nothing, so nothing is sent), per record;
- downstream, per 10k records: the bridge's parse and write batch, the writer's decode and
  DuckDB insert into prediction_log (process CPU: DuckDB's threads count).

Rounds take turns with the stages. Last line: JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from featurestore.ingest.predictions import (
    PredictionRows,
    decode_batch,
    encode_record,
    parse_record,
)
from featurestore.serving import prediction_log
from featurestore.serving.predict import EntityPrediction, PredictionResult, UsedFeature
from featurestore.store.database import OffsetSpan, Store

FEATURES = 10
ROUNDS = 5
RECORDS = 10_000  # per stage and round
EVENT_TIME = dt.datetime(2024, 5, 1, 10, 0, 0, 250)


def answer(entities: int) -> PredictionResult:
    """A Predict answer as the serving process hands it to the log."""
    return PredictionResult(
        "credit_risk_v1",
        "1.0.0",
        [
            EntityPrediction(
                f"applicant_{i}",
                {"label": [1.0], "probabilities": [0.25, 0.75]},
                [
                    UsedFeature(f"feature_{j}", 1.5 + i * j, EVENT_TIME, "online")
                    for j in range(FEATURES)
                ],
            )
            for i in range(entities)
        ],
    )


def thread_us(work: Callable[[], object], repeats: int) -> float:
    """Thread CPU microseconds per run of work."""
    work()
    began = time.thread_time_ns()
    for _ in range(repeats):
        work()
    return (time.thread_time_ns() - began) / repeats / 1e3


def serving_side(entities: int, producer: Producer) -> dict[str, float]:
    """Request-thread CPU per call and publisher CPU per record, for calls of `entities`."""
    result = answer(entities)
    entry = prediction_log.Predicted("req-1", result, time.time())
    records = prediction_log.records(entry)
    messages = [encode_record(r) for r in records]
    calls = RECORDS // entities
    log = prediction_log.PredictionLog(buffer_size=1_000_000)

    def produce() -> None:
        for message in messages:
            producer.produce("predictions", message, on_delivery=lambda _e, _m: None)

    figures = {
        f"log_predict_{entities}_us_per_call": thread_us(
            lambda: log.log_predict("req-1", result), calls
        ),
        f"build_{entities}_us_per_record": thread_us(lambda: prediction_log.records(entry), calls)
        / entities,
        f"encode_{entities}_us_per_record": thread_us(
            lambda: [encode_record(r) for r in records], calls
        )
        / entities,
        f"produce_{entities}_us_per_record": thread_us(produce, calls) / entities,
    }
    producer.purge()
    producer.poll(0)
    return figures


def downstream(
    store: Store, messages: list[bytes], start: int, batch: int = 1000
) -> dict[str, float]:
    """CPU seconds per 10k records: bridge (parse, write batch), writer (decode, insert),
    in write batches of `batch` records."""
    spent = dict.fromkeys(("bridge_parse", "bridge_batch", "writer_decode", "writer_insert"), 0.0)
    for first in range(0, len(messages), batch):
        t0 = time.thread_time()
        rows = PredictionRows()
        for message in messages[first : first + batch]:
            rows.extend(parse_record(message))
        t1 = time.thread_time()
        offsets = list(range(start + first, start + min(first + batch, len(messages))))
        payload = rows.encode(offsets)
        t2 = time.thread_time()
        table, arrow_offsets = decode_batch(payload)
        t3 = time.thread_time()
        p3 = time.process_time()
        store.write_predictions(
            table, arrow_offsets, OffsetSpan("predictions", 0, offsets[0], offsets[-1])
        )
        spent["writer_insert"] += time.process_time() - p3
        spent["bridge_parse"] += t1 - t0
        spent["bridge_batch"] += t2 - t1
        spent["writer_decode"] += t3 - t2
    scale = 10_000 / len(messages)
    return {f"{name}_cpu_s_per_10k": value * scale for name, value in spent.items()}


def main() -> None:
    """Run the rounds and print medians; the last line is JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1000, help="records per write batch")
    args = parser.parse_args()
    logging.getLogger("bench.kafka").setLevel(logging.CRITICAL)
    producer = Producer(
        {
            "bootstrap.servers": "localhost:1",
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "logger": logging.getLogger("bench.kafka"),
        }
    )
    messages = [
        message
        for call in range(RECORDS // 100)
        for message in prediction_log.encode(
            prediction_log.Predicted(f"req-{call}", answer(100), time.time())
        )
    ]
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-plog-cpu-") as folder:
        store = Store(Path(folder) / "features.duckdb")
        try:
            for round_index in range(ROUNDS):
                figures = {
                    **serving_side(1, producer),
                    **serving_side(100, producer),
                    **downstream(store, messages, round_index * len(messages), args.batch),
                }
                for key, value in figures.items():
                    samples.setdefault(key, []).append(value)
        finally:
            store.close()
    result = {key: round(statistics.median(values), 3) for key, values in samples.items()}
    result["publisher_100_us_per_record"] = round(
        result["build_100_us_per_record"]
        + result["encode_100_us_per_record"]
        + result["produce_100_us_per_record"],
        3,
    )
    result["downstream_cpu_s_per_10k"] = round(
        sum(v for k, v in result.items() if k.endswith("_cpu_s_per_10k")), 3
    )
    for key, value in result.items():
        print(f"{key:<40} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
