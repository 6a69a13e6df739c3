"""The interpreter settings a gRPC process applies at start-up."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from grpc_server.startup import tune_interpreter
from tests.conftest import make_settings


@pytest.fixture
def restored_switch_interval() -> Iterator[None]:
    """Give the test process its switch interval back."""
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("restored_switch_interval")
@pytest.mark.parametrize("milliseconds", [1.0, 0.5, 5.0])
def test_the_switch_interval_comes_from_the_settings(tmp_path: Path, milliseconds: float) -> None:
    tune_interpreter(make_settings(tmp_path, grpc_switch_interval_ms=milliseconds))
    assert sys.getswitchinterval() == pytest.approx(milliseconds / 1000)


def test_the_default_is_shorter_than_cpython_s(tmp_path: Path) -> None:
    assert make_settings(tmp_path).grpc_switch_interval_ms < 5.0


def test_a_switch_interval_of_zero_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grpc_switch_interval_ms"):
        make_settings(tmp_path, grpc_switch_interval_ms=0)
