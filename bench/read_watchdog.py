"""What the read watchdog costs the hot read, in-process: Store.read_result of one entity's
latest features (the read behind the Predict fallback), with a deadline (watched: a
Deadline made, a heap push, a release), without, and with a timer thread per read instead
(threading.Timer started and cancelled around the read: the design the watchdog replaces),
in alternating blocks of the same run. Also a read whose deadline passes: the time from the
deadline to its error.

python -m bench.read_watchdog [--entities N] [--reads N]; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

from bench.common import percentile
from featurestore.errors import QueryTimeoutError
from featurestore.reads.features import LATEST_SQL
from featurestore.reads.limits import Deadline
from featurestore.store.database import Store

BLOCK = 500
MODES = ("plain", "watched", "timer")


def load(store: Store, entities: int, features: int = 10) -> None:
    """The latest-values table of `entities` entities, filled directly."""
    store.cursor().execute(
        f"""INSERT INTO latest_features
            SELECT 'cust_' || (i // {features}), 'feature_' || (i % {features}),
                   random() * 100, TIMESTAMP '2024-01-01' + to_seconds(i), now()::TIMESTAMP
            FROM range({entities * features}) t(i)"""
    )
    store.cursor().execute("CHECKPOINT")


def timings(store: Store, entities: int, reads: int) -> dict[str, list[float]]:
    """Seconds per read of each way, in alternating blocks of BLOCK reads."""
    found: dict[str, list[float]] = {name: [] for name in MODES}
    rng = random.Random(7)
    for block in range(len(MODES) * reads // BLOCK):
        mode = MODES[block % len(MODES)]
        out = found[mode]
        for _ in range(BLOCK):
            params: list[object] = [f"cust_{rng.randrange(entities)}"]
            began = time.perf_counter()
            if mode == "watched":
                deadline = Deadline.for_read(time.time() + 10.0, 30.0)
                store.read_result(LATEST_SQL, params, deadline=deadline)
            elif mode == "timer":
                timer = threading.Timer(10.0, store.cursor().interrupt)
                timer.start()
                store.read_result(LATEST_SQL, params)
                timer.cancel()
            else:
                store.read_result(LATEST_SQL, params)
            out.append(time.perf_counter() - began)
    return found


def interrupt_delay(store: Store, limit_s: float = 0.2, rounds: int = 10) -> list[float]:
    """Seconds from a read's deadline to its QueryTimeoutError."""
    late = []
    for _ in range(rounds):
        deadline = Deadline.for_read(None, limit_s)
        try:
            store.read_result("SELECT count(*) FROM range(100000000000)", None, deadline=deadline)
        except QueryTimeoutError:
            late.append(time.monotonic() - deadline.at)
    return late


def main() -> None:
    """Run the measurement and print it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fstore-watchdog-") as tmp:
        store = Store(Path(tmp) / "features.duckdb", threads=1)
        load(store, args.entities)
        timings(store, args.entities, BLOCK)  # warm-up
        found = timings(store, args.entities, args.reads)
        late = interrupt_delay(store)
        store.close()
    result: dict[str, float] = {}
    for name, values in found.items():
        result[f"{name}_p50_ms"] = round(percentile(values, 0.5) * 1e3, 4)
        result[f"{name}_p99_ms"] = round(percentile(values, 0.99) * 1e3, 4)
    result["watch_cost_p50_us"] = round(
        (result["watched_p50_ms"] - result["plain_p50_ms"]) * 1e3, 1
    )
    result["interrupt_after_deadline_max_ms"] = round(max(late) * 1e3, 1)
    for name in MODES:
        p50, p99 = result[f"{name}_p50_ms"], result[f"{name}_p99_ms"]
        print(f"{name:8s} p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    print(f"interrupted after its deadline: at most {result['interrupt_after_deadline_max_ms']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
