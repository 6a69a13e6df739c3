"""Rebuilding the online store from DuckDB, through the DuckDB service."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from bridge.producer import FileProducer
from featurestore import constants
from featurestore.settings import Settings
from featurestore.store.online import OnlineStore
from tasks.app import configure
from tests.helpers import wait_for_count, wait_for_online, write_events

pytestmark = pytest.mark.integration


def test_rebuild_restores_lost_online_values(stack: Settings, tmp_path: Path) -> None:
    app = configure(stack)
    tag = f"r{uuid.uuid4().hex[:8]}_"
    path = tmp_path / "events.parquet"
    rows = write_events(path, tag, entities=50, features=3)
    FileProducer(stack).run([path])
    assert wait_for_count(app, tag, rows) == rows
    client = redis.Redis.from_url(stack.redis_url)
    online = OnlineStore(client)
    before = wait_for_online(online, [f"{tag}{i}" for i in range(50)], 3)
    assert all(len(v) == 3 for v in before.values())
    client.delete(*[constants.online_feature_key(e) for e in before])
    assert online.get(f"{tag}0") == {}
    written = app.send_task(constants.TASK_REBUILD_ONLINE, queue=stack.read_queue).get(timeout=300)
    assert written >= 150
    assert {e: online.get(e) for e in before} == before
