"""Exactly once under faults: SIGKILL the bridge, SIGKILL the worker, kill Redis, each
during a stream of 200k events; afterwards DuckDB holds exactly the produced events."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from featurestore import stack as stack_module
from featurestore.ingest.sources import FileSource
from featurestore.services import KafkaService, ManagedService, RedisService
from featurestore.services._proc import pid_alive
from featurestore.settings import Settings
from tasks.app import configure
from tests.helpers import (
    expected_checksum,
    stored_checksum,
    stored_count,
    wait_for_count,
    wait_until,
    write_events,
)

pytestmark = pytest.mark.integration

EVENTS = 200_000
RATE = 40_000  # events/s: slow enough that the fault lands mid-stream


def produce_steadily(settings: Settings, path: Path, done: threading.Event) -> None:
    """Publish a file's events at RATE events/s (the producer of a live stream)."""
    # Idempotent like the project's producer: a plain one retrying across a broker kill
    # can write a message twice (seen once: 500 rows more than produced).
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    source = FileSource(path, 500)
    began, sent = time.monotonic(), 0
    for message in source.messages():
        producer.produce(settings.features_topic, message.payload)
        producer.poll(0)
        sent += message.rows
        time.sleep(max(0.0, began + sent / RATE - time.monotonic()))
    producer.flush(60)
    source.close()
    done.set()


def program_pid(settings: Settings, name: str) -> int:
    pids = {p.name: p.pid for p in stack_module.programs(settings)}
    assert pids.get(name), f"{name} is not running: {pids}"
    return pids[name]


def kill_program(name: str) -> Callable[[Settings], None]:
    def kill(settings: Settings) -> None:
        os.kill(program_pid(settings, name), signal.SIGKILL)

    return kill


def kill_and_restart(kind: Callable[[Settings], ManagedService]) -> Callable[[Settings], None]:
    """SIGKILL a backing service, then start it again with its start-up function."""

    def fault(settings: Settings) -> None:
        service = kind(settings)
        pid = service.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(pid), timeout=10)
        service.ensure()

    return fault


@pytest.mark.parametrize(
    "fault",
    [
        kill_program("bridge"),
        kill_program("duckdb-worker"),
        kill_and_restart(RedisService),
        kill_and_restart(KafkaService),
    ],
    ids=["sigkill-bridge", "sigkill-worker", "kill-redis", "kill-kafka"],
)
def test_exactly_once_after_fault_mid_stream(
    stack: Settings, tmp_path: Path, fault: Callable[[Settings], None]
) -> None:
    app = configure(stack)
    tag = f"f{uuid.uuid4().hex[:8]}_"
    path = tmp_path / "events.parquet"
    assert write_events(path, tag, EVENTS // 10) == EVENTS
    done = threading.Event()
    producing = threading.Thread(target=produce_steadily, args=(stack, path, done))
    producing.start()
    assert wait_until(lambda: stored_count(app, tag) >= EVENTS // 5, timeout=120)
    fault(stack)
    at_fault = stored_count(app, tag)
    producing.join()
    assert at_fault < EVENTS, "the fault must land while events are still flowing"
    assert wait_for_count(app, tag, EVENTS, timeout=240) == EVENTS
    # A resend goes out batch_resend_after_s after a lost result and nothing signals its
    # end: time passes on purpose, then a resent batch must have added nothing.
    time.sleep(stack.batch_resend_after_s + 2)
    assert stored_checksum(app, tag) == expected_checksum(path, tag)
    states = {p.name: p.state for p in stack_module.programs(stack)}
    assert set(states.values()) == {"RUNNING"}, states
