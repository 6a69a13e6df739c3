"""Where a slow read's time goes, for bench.read_ingest: each latest read of the run joined
with the worker's trace of its task (tasks.read_trace) into six steps, and its time in
DuckDB split by whether a latest_merge ran meanwhile (a merge whose commit checkpoints
holds reads of latest_features until the checkpoint ends: README, reads under write load).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bench.common import percentile
from tasks.read_trace import read_lines

STEPS = (
    "to_worker",  # the client's send until the worker's consumer thread had the message
    "to_pool_thread",  # until a pool thread began the task
    "before_query",  # the task's Python before the DuckDB service's reads
    "in_duckdb",  # the service's reads (the statement, its rows, the result's bytes)
    "storing_result",  # until Celery had stored the result in Redis
    "to_client",  # until the client had it
)


class Call(Protocol):
    """One timed call of the benchmark: its kind, wall start and end (epoch seconds), ms."""

    kind: str
    start: float
    end: float
    ms: float


def _overlaps(lo: float, hi: float, intervals: Sequence[tuple[float, float]]) -> bool:
    return any(a < hi and lo < b for a, b in intervals)


def read_steps(
    trace: Path, samples: Sequence[Call], merges: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """Mean ms of each step over the slowest 5% of the latest reads, and the p50/p99 of
    their DuckDB step with and without a merge running; {} without a trace."""
    lines = read_lines(trace)
    received = [line[0] for line in lines]
    joined: list[tuple[float, list[float], bool]] = []
    for sample in samples:
        if sample.kind != "read":
            continue
        # Calls run one at a time: the task received within a call's span is its task.
        at = bisect.bisect_left(received, sample.start)
        if at == len(lines) or lines[at][0] > sample.end:
            continue
        got, started, began, ended, stored, _ = lines[at]
        marks = [sample.start, got, started, began, ended, stored, sample.end]
        steps = [(b - a) * 1e3 for a, b in itertools.pairwise(marks)]
        joined.append((sample.ms, steps, _overlaps(began, ended, merges)))
    if not joined:
        return {}
    joined.sort(key=lambda row: row[0])
    slowest = joined[int(len(joined) * 0.95) :]
    out: dict[str, Any] = {"read_traced": len(joined)}
    for index, name in enumerate(STEPS):
        mean = sum(row[1][index] for row in slowest) / len(slowest)
        out[f"read_slowest_5pct_{name}_ms"] = round(mean, 2)
    for met, label in ((True, "meeting_merge"), (False, "outside_merge")):
        in_duckdb = [row[1][3] for row in joined if row[2] is met]
        out[f"read_in_duckdb_{label}_p50_ms"] = round(percentile(in_duckdb, 0.5), 2)
        out[f"read_in_duckdb_{label}_p99_ms"] = round(percentile(in_duckdb, 0.99), 2)
    return out
