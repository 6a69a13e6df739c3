"""Fixtures of the store's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from featurestore.services import ManagedService
from featurestore.settings import Settings
from featurestore.store.service import DuckDBService


@pytest.fixture
def service(
    settings: Settings, redis_service: ManagedService, tmp_path: Path
) -> Iterator[DuckDBService]:
    """A DuckDBService of its own (a fresh file) on the session's Redis."""
    local = settings.model_copy(update={"state_dir": tmp_path, "duckdb_path": None})
    client = redis.Redis.from_url(settings.redis_url)
    running = DuckDBService(local, client)
    yield running
    running.close()
    client.close()
