"""Where a single event's produce-to-servable time goes (python -m bench.freshness_stages
[--load RATE] [--tries N]): events produced alone, optionally under a steady background
load, each timed from the bridge's and the worker's log lines. Stages: produced (send) ->
acked by Kafka -> batch sent by the bridge -> write task started -> DuckDB committed ->
online store updated (task end) -> seen by a poller. The last line is one JSON object."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import redis
from confluent_kafka import Message, Producer

from bench.common import bench_settings, percentile, running_stack
from bench.ingest_latency import steady_message
from bridge.producer import producer_config
from featurestore.logs import setup_logging
from featurestore.settings import Settings
from featurestore.store.online import OnlineStore

_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
_SENT = re.compile(_STAMP + r".*batch_sent task_id=\S+ partition=(\d+) offsets=(\d+)-(\d+)")
_WRITTEN = re.compile(
    _STAMP + r".*write_batch topic=\S+ partition=(\d+) offsets=(\d+)-(\d+) .*"
    r"ms=([\d.]+) commit_ms=([\d.]+)"
)


def _log_time(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()


def _spans(
    path: Path, pattern: re.Pattern[str]
) -> list[tuple[float, int, int, int, tuple[str, ...]]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        match = pattern.match(line)
        if match:
            stamp, part, first, last, *rest = match.groups()
            found.append((_log_time(stamp), int(part), int(first), int(last), tuple(rest)))
    return found


def _load(settings: Settings, rate: int, stop: threading.Event) -> None:
    """A steady background load of `rate` events/s in messages of 200 (as freshness())."""
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    per_message, sent, began = 200, 0, time.monotonic()
    while not stop.is_set():
        producer.produce(settings.features_topic, steady_message("load", sent, per_message))
        producer.poll(0)
        sent += per_message
        time.sleep(max(0.0, began + sent / rate - time.monotonic()))
    producer.flush(30)


def single_events(settings: Settings, tries: int) -> list[dict[str, float | int]]:
    """Produce `tries` events alone (0.3 s apart); each one's send, ack, seen times and
    partition/offset."""
    producer = Producer(producer_config(settings, linger_ms=0))
    online = OnlineStore(redis.Redis.from_url(settings.redis_url))
    run = uuid.uuid4().hex[:8]
    events: list[dict[str, float | int]] = []
    for i in range(tries):
        entity = f"single_{run}_{i}"
        record: dict[str, float | int] = {}

        def delivered(err: object, msg: Message, record: dict[str, float | int] = record) -> None:
            record["acked"] = time.time()
            record["partition"] = msg.partition() or 0
            record["offset"] = msg.offset() or 0

        body = {
            "entity_id": entity,
            "feature_name": "f",
            "value": float(i),
            "event_timestamp": dt.datetime.now(dt.UTC).isoformat(),
        }
        record["produced"] = time.time()
        producer.produce(settings.features_topic, orjson.dumps(body), on_delivery=delivered)
        producer.flush(30)
        while not online.client.exists(f"online:{entity}"):
            time.sleep(0.0005)
        record["seen"] = time.time()
        events.append(record)
        time.sleep(0.3)
    return events


def breakdown(settings: Settings, events: list[dict[str, float | int]]) -> dict[str, float]:
    """Each stage's p50 and p99 (ms) across the events, from the logs."""
    logs = settings.state_dir / "logs"
    sent = _spans(logs / "bridge.log", _SENT)
    written = _spans(logs / "duckdb-worker.log", _WRITTEN)
    stages: dict[str, list[float]] = {}
    for event in events:
        part, offset = int(event["partition"]), int(event["offset"])
        at_sent = [t for t, p, a, b, _ in sent if p == part and a <= offset <= b]
        at_done = [(t, r) for t, p, a, b, r in written if p == part and a <= offset <= b]
        if not at_sent or not at_done:
            continue
        done, (ms, commit_ms) = at_done[0][0], map(float, at_done[0][1])
        started = done - ms / 1000
        marks = {
            "ack": event["acked"] - event["produced"],
            "to_bridge_sent": at_sent[0] - event["acked"],
            "to_task_started": started - at_sent[0],
            "duckdb_commit": commit_ms / 1000,
            "online_update": (ms - commit_ms) / 1000,
            "to_seen": event["seen"] - done,
            "total": event["seen"] - event["produced"],
        }
        for name, seconds in marks.items():
            stages.setdefault(name, []).append(seconds * 1000)
    result: dict[str, float] = {"events_matched": len(stages.get("total", []))}
    for name, values in stages.items():
        result[f"{name}_p50_ms"] = round(percentile(values, 0.5), 1)
        result[f"{name}_p99_ms"] = round(percentile(values, 0.99), 1)
    return result


def main() -> None:
    """Single events alone or under a background load, on a stack of their own."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", type=int, default=0, help="background events/s")
    parser.add_argument("--tries", type=int, default=40)
    args = parser.parse_args()
    setup_logging("WARNING")
    state = Path(tempfile.mkdtemp(prefix="fstore-bench-stages-"))
    settings = bench_settings(state)
    stop = threading.Event()
    with running_stack(settings):
        loader = threading.Thread(target=_load, args=(settings, args.load, stop), daemon=True)
        single_events(settings, 5)  # warm-up: assignment, first task, first connections
        if args.load:
            loader.start()
            time.sleep(3)
        try:
            events = single_events(settings, args.tries)
        finally:
            stop.set()
            if args.load:
                loader.join()
        result = breakdown(settings, events)
    shutil.rmtree(state, ignore_errors=True)
    for key, value in result.items():
        print(f"{key:28s} {value}")
    print(json.dumps({"load": args.load, **result}))


if __name__ == "__main__":
    main()
