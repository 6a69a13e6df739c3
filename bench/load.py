"""Load generators for gRPC benchmarks: closed-loop samples and an open-loop schedule."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from bench.common import percentile

log = logging.getLogger("bench.load")

Call = Callable[[int], object]


@dataclass
class RunFigures:
    """What every open-loop run reports: latencies (ms), how late each send left against its
    schedule (ms) and errors by status code; each kind of run adds its own fields."""

    rate: float
    planned: int
    latencies_ms: list[float] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def achieved_rps(self) -> float:
        """Calls per second of the run."""
        raise NotImplementedError

    @property
    def error_count(self) -> int:
        """Calls that failed."""
        return sum(self.errors.values())

    def kept_up(self, tolerance: float = 0.97) -> bool:
        """No error, and the schedule's rate was reached."""
        return not self.errors and self.achieved_rps >= tolerance * self.rate

    def summary(self, prefix: str) -> dict[str, float]:
        """Percentiles and counts under `prefix_`."""
        return {
            f"{prefix}_p50_ms": percentile(self.latencies_ms, 0.5),
            f"{prefix}_p99_ms": percentile(self.latencies_ms, 0.99),
            f"{prefix}_max_ms": max(self.latencies_ms, default=float("nan")),
            f"{prefix}_errors": self.error_count,
            f"{prefix}_achieved_rps": self.achieved_rps,
            f"{prefix}_late_p50_ms": percentile(self.late_ms, 0.5),
            f"{prefix}_late_p99_ms": percentile(self.late_ms, 0.99),
        }


@dataclass
class LoadResult(RunFigures):
    """Every call of an open-loop run from this process (latencies from send to reply),
    and the run's length."""

    elapsed_s: float = 0.0

    @property
    def achieved_rps(self) -> float:
        """Calls answered (with or without error) per second of the run."""
        done = len(self.latencies_ms) + sum(self.errors.values())
        return done / self.elapsed_s if self.elapsed_s else 0.0


def open_loop(call: Call, rate: float, seconds: float, threads: int) -> LoadResult:
    """Call i is due at start + i / rate, whatever earlier calls took (an open loop, so a
    slow reply does not slow the arrivals); threads take due calls in turn."""
    result = LoadResult(rate=rate, planned=round(rate * seconds))
    counter = itertools.count()
    lock = threading.Lock()
    start = time.perf_counter() + 0.05

    def worker() -> None:
        latencies, late, errors = [], [], Counter[str]()
        while (i := next(counter)) < result.planned:
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            try:
                call(i)
            except grpc.RpcError as exc:
                errors[exc.code().name] += 1
            else:
                latencies.append((time.perf_counter() - sent) * 1000)
            late.append((sent - due) * 1000)
        with lock:
            result.latencies_ms += latencies
            result.late_ms += late
            result.errors.update(errors)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result.elapsed_s = time.perf_counter() - start
    return result


def closed_loop(calls: dict[str, Call], samples: int, warmup: int = 50) -> dict[str, list[float]]:
    """Milliseconds of `samples` calls of each, one at a time, the kinds taken in turn (so a
    drift of the machine's speed touches every kind alike)."""
    for call in calls.values():
        for i in range(warmup):
            call(i)
    out: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(samples):
        for name, call in calls.items():
            began = time.perf_counter()
            call(i)
            out[name].append((time.perf_counter() - began) * 1000)
    return out


class Step(Protocol):
    """One rate's outcome, from either client (LoadResult, bench.ghz.GhzRun)."""

    latencies_ms: list[float]

    @property
    def achieved_rps(self) -> float:
        """Calls answered per second."""

    @property
    def error_count(self) -> int:
        """Calls that failed."""

    def kept_up(self) -> bool:
        """No error, and the rate reached."""


def ramp(
    run: Callable[[int], Step], start: int, step: int, client: str
) -> tuple[int, list[dict[str, Any]]]:
    """Step the rate up until a step has an error or misses its rate; the last clean rate."""
    best, steps = 0, []
    rate = start
    while True:
        result = run(rate)
        outcome = {
            "rate": rate,
            "achieved_rps": round(result.achieved_rps),
            "p50_ms": round(percentile(result.latencies_ms, 0.5), 3),
            "p99_ms": round(percentile(result.latencies_ms, 0.99), 3),
            "errors": result.error_count,
        }
        steps.append(outcome)
        log.info(
            "bench_ramp client=%s %s", client, " ".join(f"{k}={v}" for k, v in outcome.items())
        )
        if not result.kept_up():
            return best, steps
        best = rate
        rate += step
