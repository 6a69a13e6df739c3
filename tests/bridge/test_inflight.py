"""Write tasks in flight, each mechanism on its own: commit only the finished prefix in order,
resend on timeout, retry after a failure, give a batch up to the dead-letter topic after
max_attempts, forget a revoked partition (no services: a stand-in for Celery's results)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.batcher import PendingBatch
from bridge.inflight import InFlight, Sent
from featurestore.ingest import write_batch
from featurestore.ingest.events import Columns


@dataclass
class Result:
    """What InFlight reads of a Celery AsyncResult."""

    id: str
    state: str = "PENDING"  # PENDING, SUCCESS or FAILURE
    result: Any = None
    forgotten: bool = False

    def ready(self) -> bool:
        return self.state != "PENDING"

    def successful(self) -> bool:
        return self.state == "SUCCESS"

    def forget(self) -> None:
        self.forgotten = True


@dataclass
class App:
    """Records every write task sent."""

    sent: list[tuple[list[Any], Result]] = field(default_factory=list)

    def send_task(self, name: str, args: list[Any], queue: str) -> Result:
        result = Result(id=f"task-{len(self.sent)}")
        self.sent.append((args, result))
        return result


def batch(first: int, last: int, partition: int = 0) -> PendingBatch:
    pending = PendingBatch("features", partition, first, first)
    for offset in range(first, last + 1):
        columns = Columns()
        columns.append_row(
            {
                "entity_id": f"e{offset}",
                "feature_name": "f",
                "value": float(offset),
                "event_timestamp": "2024-01-01T00:00:00Z",
            }
        )
        pending.add(offset, columns)
    return pending


@pytest.fixture
def app() -> App:
    return App()


def inflight(app: App, given_up: list[tuple[Sent, str]], **options: Any) -> InFlight:
    values: dict[str, Any] = {"max_attempts": 3, "retry_backoff_s": 0.0}
    values.update(options)
    return InFlight(
        app,
        "writes",
        120.0,
        give_up=lambda sent, reason: given_up.append((sent, reason)),
        **values,
    )


def test_commits_only_the_finished_prefix_in_order(app: App) -> None:
    tasks = inflight(app, [])
    for first in (0, 10, 20):
        tasks.send(batch(first, first + 9))
    app.sent[1][1].state = "SUCCESS"  # the middle one first
    assert tasks.collect() == {}
    app.sent[0][1].state = "SUCCESS"
    assert tasks.collect() == {("features", 0): 20}
    app.sent[2][1].state = "SUCCESS"
    assert tasks.collect() == {("features", 0): 30}
    assert len(tasks) == 0


def test_resends_a_batch_whose_result_never_comes(app: App) -> None:
    tasks = inflight(app, [])
    tasks.resend_after_s = 0.0
    tasks.send(batch(0, 4))
    assert tasks.collect() == {}
    assert len(app.sent) == 2
    assert app.sent[1][0] == app.sent[0][0]  # the same payload and span again
    assert app.sent[0][1].forgotten


def test_retries_a_failed_batch_then_commits(app: App) -> None:
    tasks = inflight(app, [])
    tasks.send(batch(0, 4))
    app.sent[0][1].state, app.sent[0][1].result = "FAILURE", RuntimeError("disk full")
    assert tasks.collect() == {}  # failed: retry due now (no back-off here)
    assert tasks.collect() == {}  # resent
    assert len(app.sent) == 2
    app.sent[1][1].state = "SUCCESS"
    assert tasks.collect() == {("features", 0): 5}


def test_a_batch_failing_every_attempt_goes_to_dead_letters(app: App) -> None:
    given_up: list[tuple[Sent, str]] = []
    tasks = inflight(app, given_up)
    tasks.send(batch(0, 2))
    tasks.send(batch(3, 5))
    app.sent[1][1].state = "SUCCESS"
    for attempt in range(3):
        app.sent[-1 if attempt else 0][1].state = "FAILURE"
        app.sent[-1 if attempt else 0][1].result = ValueError("always")
        commits = tasks.collect()
        if attempt < 2:
            assert commits == {}
            tasks.collect()  # resend
    assert commits == {("features", 0): 6}, "the partition's commits must move on"
    [(sent, reason)] = given_up
    assert (sent.span.first_offset, sent.span.last_offset) == (0, 2)
    assert "3 times" in reason and "ValueError: always" in reason
    events = write_batch.events_by_offset(sent.payload)
    assert sorted(events) == [0, 1, 2]
    assert events[1] == [
        {
            "entity_id": "e1",
            "feature_name": "f",
            "value": 1.0,
            "event_timestamp": "2024-01-01T00:00:00Z",
        }
    ]


def test_a_dead_letter_failure_keeps_the_batch(app: App) -> None:
    def refuse(_sent: Sent, _reason: str) -> None:
        raise ConnectionError("kafka down")

    tasks = InFlight(
        app,
        "writes",
        120.0,
        max_attempts=1,
        give_up=refuse,
        retry_backoff_s=0.0,
    )
    tasks.send(batch(0, 0))
    app.sent[0][1].state = "FAILURE"
    with pytest.raises(ConnectionError):
        tasks.collect()
    assert len(tasks) == 1  # not committed past: read again after the consumer restarts


def test_forgets_a_revoked_partition(app: App) -> None:
    tasks = inflight(app, [])
    tasks.send(batch(0, 4, partition=0))
    tasks.send(batch(0, 4, partition=1))
    tasks.forget_partition("features", 0)
    app.sent[1][1].state = "SUCCESS"
    assert tasks.collect() == {("features", 1): 5}
    assert len(tasks) == 0


def test_a_restarted_writer_gets_every_unfinished_batch_again_at_once(app: App) -> None:
    epoch: list[str | None] = [None]
    flight = inflight(app, [], writer_epoch=lambda: epoch[0], epoch_check_s=0.0)
    flight.send(batch(0, 9))
    flight.send(batch(10, 19))
    flight.send(batch(20, 29))
    epoch[0] = "worker-1"
    assert flight.collect() == {}  # the first epoch seen is no restart
    app.sent[1][1].state = "SUCCESS"  # the middle batch is done; the first was lost
    assert flight.collect() == {} and len(app.sent) == 3

    epoch[0] = "worker-2"  # the worker was killed holding batch 0-9, and restarted
    assert flight.collect() == {}

    assert [args[3:] for args, _ in app.sent[3:]] == [[0, 9], [20, 29]]  # not the done one
    for _, result in app.sent[3:]:
        result.state = "SUCCESS"
    assert flight.collect() == {("features", 0): 30}
    assert flight.collect() == {} and len(app.sent) == 5  # the same epoch: nothing again


def test_the_writer_epoch_is_read_at_most_once_per_period(app: App) -> None:
    reads: list[int] = []

    def epoch() -> str:
        reads.append(1)
        return "worker-1"

    flight = inflight(app, [], writer_epoch=epoch, epoch_check_s=3600.0)
    for _ in range(5):
        flight.collect()
    assert len(reads) == 1
