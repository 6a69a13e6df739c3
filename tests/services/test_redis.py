"""Redis start-up: idempotent, safe from several processes at once, and a round trip."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
import redis

from featurestore.services import ManagedService, RedisService
from featurestore.services._proc import pid_alive
from featurestore.settings import Settings
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def test_round_trip_and_second_call_starts_nothing(
    redis_service: ManagedService, settings: Settings
) -> None:
    status = redis_service.ensure()
    assert status.reachable and not status.started
    assert status.version and status.version[0].isdigit()
    client = redis.Redis.from_url(settings.redis_url)
    client.set("test:round-trip", b"\x00bytes\xff")
    assert client.get("test:round-trip") == b"\x00bytes\xff"


def _ensure_in_child(settings_json: str, results: multiprocessing.Queue[bool]) -> None:
    results.put(RedisService(Settings.model_validate_json(settings_json)).ensure().started)


def test_concurrent_callers_start_exactly_one_server(
    redis_service: ManagedService, settings: Settings
) -> None:
    pid = redis_service.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(pid), timeout=10)
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[bool] = ctx.Queue()
    children = [
        ctx.Process(target=_ensure_in_child, args=(settings.model_dump_json(), results))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    started = [results.get(timeout=5) for _ in children]
    assert sorted(started) == [False, False, False, True]
    assert redis_service.probe() is not None
