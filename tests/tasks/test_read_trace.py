"""The worker's read trace and the benchmark's join of it (no services)."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.read_steps import STEPS, read_steps
from featurestore import constants
from tasks.read_trace import FIELDS, ReadTrace, read_lines


class Service:
    """A read_many that records the thread it ran on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def read_many(self, requests: list[tuple[str, Any]]) -> list[bytes | tuple[str, str]]:
        self.threads.append(threading.get_ident())
        return [b"row" for _ in requests]


def _run(trace: ReadTrace, service: Service, task_id: str, name: str, reads: int) -> None:
    request = SimpleNamespace(id=task_id, name=name)
    trace.received(request=request)

    def pool_thread() -> None:
        trace.started(task_id=task_id)
        service.read_many([("SELECT 1", None)] * reads)
        trace.stored(sender=SimpleNamespace(request=request))

    thread = threading.Thread(target=pool_thread)
    thread.start()
    thread.join(5)


def test_each_read_task_gives_one_line_of_ordered_stamps_and_other_tasks_none() -> None:
    out = io.StringIO()
    trace = ReadTrace(out)
    service = Service()
    trace.wrap(service)
    _run(trace, service, "r1", constants.TASK_READ_MANY, reads=3)
    _run(trace, service, "w1", constants.TASK_WRITE_BATCH, reads=2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    fields = lines[0].split()
    assert len(fields) == len(FIELDS)
    stamps = [float(x) for x in fields[:-1]]
    assert stamps == sorted(stamps), "received <= started <= query <= stored"
    assert fields[-1] == "3"
    assert len(service.threads) == 2, "the wrapped read_many still runs for every task"


@dataclass
class Call:
    kind: str
    start: float
    end: float
    ms: float


def test_a_slow_read_is_split_into_its_steps_and_its_merge(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    # received, started, query began, query ended, stored, reads
    trace.write_text(
        "100.010 100.011 100.012 100.212 100.213 1\n200.001 200.002 200.003 200.004 200.005 1\n"
    )
    calls = [Call("read", 100.0, 100.215, 215.0), Call("noop", 150.0, 150.1, 100.0)]
    calls += [Call("read", 200.0, 200.006, 6.0)]
    merge = [(100.1, 100.2)]
    assert [line[-1] for line in read_lines(trace)] == [1.0, 1.0]
    figures = read_steps(trace, calls, merge)
    assert figures["read_traced"] == 2
    # The slowest 5% of two reads is the slowest one: 10 ms to the worker, 200 in DuckDB.
    assert round(figures["read_slowest_5pct_to_worker_ms"]) == 10
    assert round(figures["read_slowest_5pct_in_duckdb_ms"]) == 200
    assert round(figures["read_slowest_5pct_to_client_ms"]) == 2
    assert set(STEPS) == {key[len("read_slowest_5pct_") : -3] for key in figures if "5pct" in key}
    assert round(figures["read_in_duckdb_meeting_merge_p99_ms"]) == 200
    assert round(figures["read_in_duckdb_outside_merge_p99_ms"]) == 1
    assert read_steps(tmp_path / "absent.txt", calls, merge) == {}
