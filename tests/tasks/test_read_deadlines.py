"""How a read's deadline travels from its caller (no services): the coalescer's message
carries it as wall-clock time, the errors of limits come back with their type, and a batch
whose callers all gave up frees its slot for the next read at once."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from featurestore.errors import QueryTimeoutError, ReadLimitError
from tasks.client.coalescer import MAX_IN_FLIGHT, Coalescer, _Batch, _Read, outcome_to_result


def test_a_read_carries_a_wall_clock_deadline() -> None:
    before = time.time()
    read = _Read("SELECT 1", None, 2.5)
    assert before + 2.5 <= read.deadline <= time.time() + 2.5


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (("QueryTimeoutError", "stopped at its time limit of 2 s"), QueryTimeoutError),
        (("ReadLimitError", "more than 1,000,000 rows (FSTORE_READ_MAX_ROWS)"), ReadLimitError),
    ],
)
def test_limit_errors_come_back_with_their_type(outcome: tuple[str, str], error: type) -> None:
    with pytest.raises(error) as caught:
        outcome_to_result(list(outcome))
    assert str(caught.value) == outcome[1]


class _Recording(Coalescer):
    """A coalescer without threads or broker that records what it would send."""

    def __init__(self) -> None:  # no super(): no listener, no dispatcher thread
        self._lock = threading.Lock()
        self._in_flight: dict[str, _Batch] = {}
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._pending: queue.SimpleQueue[_Read] = queue.SimpleQueue()
        self.sent: list[tuple[list[_Read], bool]] = []

    def _send(self, producer: Any, reads: list[_Read], holds_slot: bool) -> None:
        self.sent.append((reads, holds_slot))


def test_batches_nobody_waits_for_free_their_slots_for_the_next_read() -> None:
    coalescer = _Recording()
    for index in range(MAX_IN_FLIGHT):  # every slot held by a batch of callers that gave up
        assert coalescer._slots.acquire(blocking=False)
        gone = _Read("SELECT slow", None, 60.0)
        gone.future.cancel()
        coalescer._in_flight[f"task{index}"] = _Batch([gone], time.monotonic() + 60, True)
    read = _Read("SELECT 1", None, 10.0)
    coalescer._pending.put(read)
    coalescer._dispatch_one(producer=None)
    [(reads, holds_slot)] = coalescer.sent
    assert reads == [read]
    assert holds_slot, "the read waited for a slot held by an answer nobody reads"
    assert coalescer._in_flight == {}


def test_a_batch_someone_still_waits_for_keeps_its_slot() -> None:
    coalescer = _Recording()
    for index in range(MAX_IN_FLIGHT - 1):
        assert coalescer._slots.acquire(blocking=False)
        waiting = _Read("SELECT slow", None, 60.0)
        coalescer._in_flight[f"task{index}"] = _Batch([waiting], time.monotonic() + 60, True)
    coalescer._pending.put(_Read("SELECT 1", None, 10.0))
    coalescer._dispatch_one(producer=None)
    assert [holds for _reads, holds in coalescer.sent] == [True]
    assert set(coalescer._in_flight) == {f"task{i}" for i in range(MAX_IN_FLIGHT - 1)}
