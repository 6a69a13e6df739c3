"""A Redis restart while write tasks are in flight: the result a worker could not store
while Redis was down never comes, so the bridge must resend its unfinished batches when it
sees the restart, not after FSTORE_BATCH_RESEND_AFTER_S (120 s of stalled ingestion)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.main import writer_epoch
from featurestore.constants import WRITER_EPOCH_KEY
from featurestore.services import RedisService
from featurestore.settings import Settings
from tests.bridge.test_inflight import App, batch, inflight
from tests.conftest import PORT_OFFSET, make_settings, require_tools
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[Settings, RedisService]]:
    """A Redis of this test alone, so that restarting it disturbs nothing else."""
    require_tools("redis-server")
    settings = make_settings(tmp_path, redis_url=f"redis://localhost:{26379 + PORT_OFFSET + 21}/0")
    service = RedisService(settings)
    service.ensure()
    yield settings, service
    service.stop()


def _epoch(client: redis.Redis) -> str | None:
    """The epoch, once Redis answers again (a pooled connection may be a dead one)."""
    try:
        return writer_epoch(client)
    except redis.ConnectionError:
        return None


def test_a_redis_restart_resends_every_unfinished_batch(
    own_redis: tuple[Settings, RedisService],
) -> None:
    settings, service = own_redis
    client = redis.Redis.from_url(settings.redis_url)
    client.set(WRITER_EPOCH_KEY, "worker-1")  # kept across the restart (append-only file)
    app = App()
    flight = inflight(app, [], writer_epoch=lambda: _epoch(client), epoch_check_s=0.0)
    flight.send(batch(0, 9))
    flight.send(batch(10, 19))
    assert flight.collect() == {}  # the first epoch seen is no restart
    app.sent[1][1].state = "SUCCESS"
    assert flight.collect() == {}  # batch 10-19 is done, behind batch 0-9

    service.stop()  # the worker ran batch 0-9 but could not store its result
    service.ensure()
    assert wait_until(lambda: _epoch(client) is not None, timeout=30)
    assert client.get(WRITER_EPOCH_KEY) == b"worker-1"

    assert flight.collect() == {}
    assert [args[3:] for args, _ in app.sent[2:]] == [[0, 9]]  # at once, not the done one
    app.sent[2][1].state = "SUCCESS"
    assert flight.collect() == {("features", 0): 20}
    assert flight.collect() == {} and len(app.sent) == 3  # the same Redis: nothing again
