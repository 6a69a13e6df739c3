"""The read coalescer's bookkeeping: outcomes into results or errors, delivery racing a
caller that gives up, a dispatcher that outlives errors (no services)."""

from __future__ import annotations

import contextlib
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from featurestore.errors import QueryError, ReadOnlyError
from tasks.client.coalescer import (
    MAX_IN_FLIGHT,
    Coalescer,
    _Batch,
    _Read,
    claim,
    outcome_to_result,
)


def test_bytes_are_the_result() -> None:
    assert outcome_to_result(b"arrow") == b"arrow"


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (("ReadOnlyError", "the read path runs SELECT only, got DELETE"), ReadOnlyError),
        (("QueryError", "Catalog Error: no table"), QueryError),
        (("SomethingNew", "unexpected"), QueryError),
    ],
)
def test_errors_keep_their_type_and_message(outcome: tuple[str, str], error: type) -> None:
    with pytest.raises(error, match=outcome[1]):
        outcome_to_result(list(outcome))


def bare_coalescer() -> Coalescer:
    """A coalescer without its threads or broker: only its bookkeeping."""
    coalescer = Coalescer.__new__(Coalescer)
    coalescer._lock = threading.Lock()
    coalescer._in_flight = {}
    coalescer._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    return coalescer


def test_a_caller_giving_up_during_delivery_cannot_break_it() -> None:
    coalescer = bare_coalescer()
    read = _Read("SELECT 1", None, 1.0)
    coalescer._in_flight["task"] = _Batch([read], time.monotonic() + 1, holds_slot=False)

    def deliver(r: _Read) -> None:
        # The caller's timeout fires at the worst moment: between the check and the result.
        r.future.cancel()
        r.future.set_result(b"rows")

    coalescer._finish("task", deliver)
    assert read.future.result(timeout=0) == b"rows"


def test_a_cancelled_read_is_not_delivered() -> None:
    coalescer = bare_coalescer()
    read = _Read("SELECT 1", None, 1.0)
    read.future.cancel()
    coalescer._in_flight["task"] = _Batch([read], time.monotonic() + 1, holds_slot=False)
    delivered: list[_Read] = []
    coalescer._finish("task", delivered.append)
    assert delivered == []
    assert not claim(read.future)


class _Producers:
    """A producer pool whose acquire() hands out a placeholder producer."""

    def acquire(self, block: bool = True, timeout: float | None = None) -> Any:
        return contextlib.nullcontext(object())


def test_the_dispatcher_survives_any_error() -> None:
    coalescer = bare_coalescer()
    coalescer.app = SimpleNamespace(producer_pool=_Producers())
    calls: list[int] = []
    again = threading.Event()

    def dispatch_one(producer: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a broken batch")
        again.set()
        time.sleep(3600)  # parks the dispatcher (a daemon thread) once it has run again

    coalescer._dispatch_one = dispatch_one  # type: ignore[method-assign]
    threading.Thread(target=coalescer._dispatch, daemon=True).start()
    assert again.wait(timeout=10), "the dispatcher stopped after an error"
