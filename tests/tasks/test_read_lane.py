"""The worker's read lane (tasks.read_lane): batches pushed by the coalescer onto a Redis
list, run by the thread that takes them, answered through the result backend as Celery
tasks are (real Redis; the service is a recording stand-in for DuckDB's read_many)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from featurestore import constants
from featurestore.errors import QueryError
from featurestore.services import ManagedService
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.coalescer import LANE_SETTING, Coalescer, lane_key
from tasks.client.query import query_table
from tasks.read_lane import ReadLane

pytestmark = pytest.mark.integration


class Service:
    """A read_many answering each read with its statement's bytes, or failing on 'boom'."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.threads: set[str] = set()

    def read_many(self, requests: list[tuple[str, Any]]) -> list[bytes | tuple[str, str]]:
        if any(r[0] == "boom" for r in requests):
            raise RuntimeError("the service broke")
        self.batches.append(requests)
        self.threads.add(threading.current_thread().name)
        return [
            ("QueryError", "no such table") if r[0] == "bad" else r[0].encode() for r in requests
        ]


@pytest.fixture
def lane_app(settings: Settings, redis_service: ManagedService) -> Iterator[Celery]:
    app = configure(settings)
    redis.Redis.from_url(settings.redis_url).delete(lane_key(settings.read_queue))
    yield app


def coalescer_of(app: Celery, lane: bool) -> Coalescer:
    queue = app.amqp.router.route({}, constants.TASK_READ_MANY)["queue"]
    return Coalescer(app, queue, lane=lane)


def test_reads_go_by_the_lane_and_come_back_through_the_result_backend(
    lane_app: Celery, settings: Settings
) -> None:
    service = Service()
    lane = ReadLane(lane_app, settings.redis_url, settings.read_queue, service, threads=2)
    lane.start()
    try:
        client = coalescer_of(lane_app, lane=True)
        futures = [client.submit("one", [1, "x"], 10.0) for _ in range(5)]
        assert [f.result(timeout=10) for f in futures] == [b"one"] * 5
        bad = client.submit("bad", None, 10.0)
        with pytest.raises(QueryError, match="no such table"):
            bad.result(timeout=10)
    finally:
        lane.stop()
    # Parameters and the caller's deadline arrive as a Celery task's would (msgpack).
    sql, params, deadline = service.batches[0][0]
    assert (sql, params) == ("one", [1, "x"])
    assert isinstance(deadline, float)
    assert service.threads <= {"read-lane-0", "read-lane-1"}, service.threads
    assert redis.Redis.from_url(settings.redis_url).llen(lane_key(settings.read_queue)) == 0


def test_a_batch_the_service_fails_fails_each_caller_and_the_lane_goes_on(
    lane_app: Celery, settings: Settings
) -> None:
    service = Service()
    lane = ReadLane(lane_app, settings.redis_url, settings.read_queue, service, threads=1)
    lane.start()
    try:
        client = coalescer_of(lane_app, lane=True)
        with pytest.raises(RuntimeError, match="the service broke"):
            client.submit("boom", None, 10.0).result(timeout=10)
        # A message nobody can decode is dropped, not the thread.
        redis.Redis.from_url(settings.redis_url).lpush(
            lane_key(settings.read_queue), b"\xc1 not msgpack"
        )
        assert client.submit("after", None, 10.0).result(timeout=10) == b"after"
    finally:
        lane.stop()


def test_without_the_setting_reads_are_celery_task_messages(
    lane_app: Celery, settings: Settings
) -> None:
    # No worker serves the read queue here: the message stays in Celery's queue, none in
    # the lane's list.
    lane_app.conf[LANE_SETTING] = False
    client = coalescer_of(lane_app, lane=False)
    broker = redis.Redis.from_url(settings.redis_url)
    before = broker.llen(settings.read_queue)
    read = client.submit("SELECT 1", None, 0.5)
    with pytest.raises(TimeoutError):  # nobody answers
        read.result(timeout=0.5)
    read.cancel()
    assert broker.llen(settings.read_queue) == before + 1
    assert broker.llen(lane_key(settings.read_queue)) == 0
    broker.delete(settings.read_queue)


def test_the_stack_worker_answers_reads_by_its_lane(stack: Settings) -> None:
    app = configure(stack)
    assert app.conf[LANE_SETTING] is (stack.read_lane_threads > 0)
    assert stack.read_lane_threads > 0, "the lane is on by default"
    assert query_table(app, "SELECT 41 + 1 AS n").column("n").to_pylist() == [42]
