"""The bridge's consumer loop, each mechanism on its own, on a real Kafka broker (topics of
its own per test): where it resumes, dead letters delivered before the batch spanning them
is sent, failed commits, and the drain on stop. Only the Celery send side is a stand-in
(the Bridge takes its app as a parameter): it answers the resume-offset task as DuckDB
would have, and records each write task, succeeding it at once or when told."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client import REGISTRY

from bridge.consumer import Bridge
from featurestore import constants
from featurestore.services import ManagedService
from featurestore.settings import Settings
from tests.bridge.test_inflight import Result
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


@dataclass
class Answer:
    """The resume-offset task's result: the offset, or an error from get()."""

    value: int | Exception

    def get(self, timeout: float) -> int:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


@dataclass
class App:
    """The Celery send side: resume offsets from `resume` (after `resume_failures` failed
    asks), write tasks recorded, succeeded at once when `auto` is set; `on_write` runs as
    each write is sent."""

    resume: dict[tuple[str, int], int] = field(default_factory=dict)
    resume_failures: int = 0
    auto: bool = True
    on_write: Callable[[list[Any]], None] | None = None
    asked: list[list[Any]] = field(default_factory=list)
    writes: list[tuple[list[Any], Result]] = field(default_factory=list)

    def send_task(self, name: str, args: list[Any], queue: str) -> Any:
        if name == constants.TASK_RESUME_OFFSET:
            self.asked.append(args)
            if len(self.asked) <= self.resume_failures:
                return Answer(TimeoutError("the DuckDB service did not answer"))
            topic, partition, committed = args
            return Answer(self.resume.get((topic, partition), committed))
        if self.on_write is not None:
            self.on_write(args)
        result = Result(id=f"task-{len(self.writes)}", state="SUCCESS" if self.auto else "PENDING")
        self.writes.append((args, result))
        return result

    def spans(self) -> list[tuple[int, int]]:
        return [(args[3], args[4]) for args, _ in self.writes]


@pytest.fixture
def local(settings: Settings, kafka_service: ManagedService) -> Settings:
    """Settings with topics and a consumer group of this test's own."""
    tag = uuid.uuid4().hex[:8]
    local = settings.model_copy(
        update={
            "features_topic": f"features_{tag}",
            "dead_letter_topic": f"features_dlq_{tag}",
            "predictions_topic": f"predictions_{tag}",
            "predictions_dead_letter_topic": f"predictions_dlq_{tag}",
            "consumer_group": f"bridge_{tag}",
            "batch_max_rows": 4,
            "batch_max_wait_s": 0.2,
            "batch_resend_after_s": 600.0,
            "drain_timeout_s": 60.0,
        }
    )
    admin = AdminClient(local.kafka_client_config())
    topics = [
        local.features_topic,
        local.dead_letter_topic,
        local.predictions_topic,
        local.predictions_dead_letter_topic,
    ]
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(timeout=30)
    return local


def event(i: int) -> bytes:
    return orjson.dumps(
        {
            "entity_id": f"e{i}",
            "feature_name": "f",
            "value": i,
            "event_timestamp": "2024-01-01T00:00:00Z",
        }
    )


def produce(settings: Settings, messages: list[bytes]) -> None:
    producer = Producer(settings.kafka_client_config())
    for message in messages:
        producer.produce(settings.features_topic, message, partition=0)
    assert producer.flush(30) == 0


def group_consumer(settings: Settings) -> Consumer:
    return Consumer({**settings.kafka_client_config(), "group.id": settings.consumer_group})


def committed(settings: Settings) -> int:
    """The group's committed offset of the features partition (-1001: none)."""
    consumer = group_consumer(settings)
    try:
        part = consumer.committed([TopicPartition(settings.features_topic, 0)], timeout=30)[0]
        return int(part.offset)
    finally:
        consumer.close()


def end_offset(settings: Settings, topic: str) -> int:
    consumer = group_consumer(settings)
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1])
    finally:
        consumer.close()


@contextmanager
def running(
    settings: Settings, app: App, wrap: Callable[[Bridge], None] | None = None
) -> Iterator[tuple[Bridge, threading.Thread, threading.Event]]:
    """The bridge's run() in a thread; stopped (and drained) on exit."""
    stop = threading.Event()
    bridge = Bridge(settings, app, stop)
    if wrap is not None:
        wrap(bridge)
    thread = threading.Thread(target=bridge.run, name="bridge-under-test")
    thread.start()
    try:
        yield bridge, thread, stop
    finally:
        stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive()


@pytest.mark.parametrize(
    ("kafka", "duckdb", "start"),
    [(None, 0, 0), (None, 5, 5), (3, 7, 7), (7, 3, 7), (4, 4, 4)],
    ids=["fresh", "duckdb-only", "duckdb-later", "kafka-later", "equal"],
)
def test_resumes_from_the_later_of_kafkas_and_duckdbs_offsets(
    local: Settings, kafka: int | None, duckdb: int, start: int
) -> None:
    produce(local, [event(i) for i in range(10)])
    if kafka is not None:
        consumer = group_consumer(local)
        consumer.commit(
            offsets=[TopicPartition(local.features_topic, 0, kafka)], asynchronous=False
        )
        consumer.close()
    app = App(resume={(local.features_topic, 0): duckdb})
    with running(local, app):
        assert wait_until(lambda: any(hi == 9 for _, hi in app.spans()), timeout=60)
    # DuckDB was asked from Kafka's position (its committed offset, else the partition's start).
    assert [local.features_topic, 0, 0 if kafka is None else kafka] in app.asked
    spans = sorted(app.spans())
    assert spans[0][0] == start
    # No gap and no repeat.
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(spans))
    assert committed(local) == 10


def test_resume_offset_is_asked_again_until_the_duckdb_service_answers(local: Settings) -> None:
    produce(local, [event(i) for i in range(6)])
    app = App(resume={(local.features_topic, 0): 2}, resume_failures=1)
    with running(local, app):
        assert wait_until(lambda: any(hi == 5 for _, hi in app.spans()), timeout=60)
    assert len([a for a in app.asked if a[0] == local.features_topic]) >= 2
    assert min(lo for lo, _ in app.spans()) == 2


def test_no_batch_is_sent_before_the_dead_letters_it_spans_are_in_kafka(local: Settings) -> None:
    # Hostile messages: not JSON, a NUL in the entity id, bytes that are not UTF-8.
    hostile = [
        b"not json",
        event(0).replace(b'"e0"', b'"e\\u0000"'),
        event(0).replace(b"e0", b"\xff"),
    ]
    bad = {1, 2, 5, 9, 10, 11}
    produce(local, [hostile[i % 3] if i in bad else event(i) for i in range(14)])
    early: list[tuple[int, int, int]] = []

    def check(args: list[Any]) -> None:
        # Every dead letter at or before the batch's last offset is already in the topic.
        first, last = args[3], args[4]
        spanned = len([i for i in bad if i <= last])
        delivered = end_offset(local, local.dead_letter_topic)
        if delivered < spanned:
            early.append((first, last, delivered))

    app = App(on_write=check)
    with running(local, app):
        assert wait_until(lambda: any(hi == 13 for _, hi in app.spans()), timeout=60)
    assert early == []
    assert sorted(dead_letter_reasons(local, len(bad))) == sorted(
        ["malformed JSON", "event 0: entity_id contains control characters", "malformed JSON"] * 2
    )
    assert committed(local) == 14


def dead_letter_reasons(settings: Settings, count: int) -> list[str]:
    """The reason header of the first `count` dead letters, cut at the first colon after
    the event index (the decoder's own words follow)."""
    consumer = group_consumer(settings.model_copy(update={"consumer_group": uuid.uuid4().hex}))
    consumer.assign([TopicPartition(settings.dead_letter_topic, 0, 0)])
    reasons: list[str] = []
    try:
        while len(reasons) < count:
            message = consumer.poll(30)
            assert message is not None and message.error() is None
            reason = dict(message.headers() or [])["reason"] or b""
            text = reason.decode() if isinstance(reason, bytes) else reason
            reasons.append(text if text.startswith("event") else text.partition(":")[0])
    finally:
        consumer.close()
    return reasons


class FlakyCommits:
    """The bridge's real consumer, whose first `failures` commits fail as a broker's would."""

    def __init__(self, consumer: Consumer, failures: int) -> None:
        self._consumer = consumer
        self.failures = failures
        self.calls = 0

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT))
        return self._consumer.commit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def commit_errors() -> float:
    return REGISTRY.get_sample_value("fstore_bridge_errors_total", {"kind": "commit"}) or 0.0


def test_a_failed_commit_is_made_again_and_none_is_skipped(local: Settings) -> None:
    produce(local, [event(i) for i in range(8)])
    before = commit_errors()
    flaky: list[FlakyCommits] = []

    def wrap(bridge: Bridge) -> None:
        flaky.append(FlakyCommits(bridge.consumer, failures=2))
        bridge.consumer = flaky[0]  # type: ignore[assignment]

    app = App()
    with running(local, app, wrap):
        assert wait_until(lambda: committed(local) == 8, timeout=60)
    assert flaky[0].calls >= 3
    assert commit_errors() == before + 2
    spans = sorted(app.spans())
    assert spans[0][0] == 0 and spans[-1][1] == 7


def test_stop_sends_the_open_batch_and_commits_it_before_returning(local: Settings) -> None:
    # Batches are never due by time here. The first event goes at once (the writer is idle),
    # and its write is left unanswered, so the next ones stay open: only the drain on stop
    # sends them.
    patient = local.model_copy(update={"batch_max_wait_s": 3600.0, "batch_max_rows": 1000})
    produce(patient, [event(0)])
    app = App(auto=False)
    with running(patient, app) as (bridge, thread, stop):
        assert wait_until(lambda: len(app.writes) == 1, timeout=60)
        produce(patient, [event(i) for i in range(1, 5)])
        assert wait_until(lambda: sum(len(p.columns) for p in bridge.batcher._open.values()) == 4)
        assert len(app.writes) == 1
        stop.set()
        assert wait_until(lambda: len(app.writes) == 2, timeout=30)
        assert app.spans() == [(0, 0), (1, 4)]
        # The drain waits for the writes' results: nothing committed until they succeed.
        assert thread.is_alive() and committed(patient) < 0
        for write in app.writes:
            write[1].state = "SUCCESS"
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert committed(patient) == 5
