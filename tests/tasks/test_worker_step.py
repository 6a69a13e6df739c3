"""The DuckDB worker's start-up step: what it sets for the process (real Redis and DuckDB)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from featurestore.services import ManagedService
from featurestore.settings import Settings
from tasks.duckdb_tasks import DuckDBTask
from tasks.worker import duckdb_service_step


@pytest.fixture
def interval_kept() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("interval_kept")
def test_the_step_sets_the_switch_interval_and_opens_the_service(
    settings: Settings, redis_service: ManagedService, tmp_path: Path
) -> None:
    local = settings.model_copy(
        update={"state_dir": tmp_path, "duckdb_path": None, "worker_switch_interval_ms": 0.5}
    )
    sys.setswitchinterval(0.005)
    stopped: list[bool] = []
    worker = SimpleNamespace(pool=SimpleNamespace(stop=lambda: stopped.append(True)))
    step = duckdb_service_step(local)(worker)
    step.start(worker)
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        assert DuckDBTask._service is not None
        assert DuckDBTask._service.row_count() == 0
    finally:
        step.stop(worker)
    assert stopped == [True], "the pool drains before the file closes"
    assert DuckDBTask._service is None
