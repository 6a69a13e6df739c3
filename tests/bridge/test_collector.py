"""The bridge's garbage-collector settings (bridge.main.tune_collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bridge.main import GC_YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_young_collections_spaced() -> None:
    gc.unfreeze()
    held = [{"start-up": True}]  # a container alive before tuning, as start-up's are
    tune_collector()
    assert gc.get_freeze_count() >= len(held)
    assert not any(obj is held for obj in gc.get_objects())
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700
