"""python -m bench.reads_during_write: do reads wait for a large write? Wall-clock figures,
so a benchmark and not a test (tests/tasks/test_reads.py checks the answers only).

Sends one 1.5M-row write task, waits until the worker has taken it, then runs 50 point
reads at once through the DuckDB service, and reports the write's seconds, when the last
read finished relative to the write's start, the reads' p50/p99, and whether every read
finished before the write did (reads run on cursors of their own, never behind the write
lock). Three rounds. The last line of output is one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis

from bench.common import bench_settings, percentile, running_stack
from featurestore import constants
from featurestore.ingest import write_batch
from featurestore.logs import setup_logging
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import query_table

log = logging.getLogger("bench")

ROWS = 1_500_000
READS = 50
ROUNDS = 3


def big_write(round_: int) -> tuple[pa.Table, int, int]:
    """ROWS rows on 1000 entities, offsets of their own per round."""
    base = round_ * ROWS
    table = pa.table(
        {
            "entity_id": [f"w{round_}_{i % 1000}" for i in range(ROWS)],
            "feature_name": [f"f{i % 7}" for i in range(ROWS)],
            "value": [i / 4 for i in range(ROWS)],
            "event_timestamp": pa.array(
                [dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(ROWS)],
                pa.timestamp("us"),
            ),
            "offset": pa.array([base + i // 1000 for i in range(ROWS)], pa.int64()),
        }
    )
    return table, base, base + (ROWS - 1) // 1000


def one_round(settings: Settings, round_: int) -> dict[str, float]:
    app = configure(settings)
    table, first, last = big_write(round_)
    payload = write_batch.encode(table)
    queue = redis.Redis.from_url(settings.redis_url)
    began = time.monotonic()
    pending: Any = app.send_task(
        constants.TASK_WRITE_BATCH,
        args=[payload, "bench-reads-during-write", 0, first, last],
        queue=settings.write_queue,
    )
    # The worker has taken the write once its queue is empty.
    while queue.llen(settings.write_queue) and time.monotonic() - began < 60:
        time.sleep(0.01)
    taken_s = time.monotonic() - began

    def one_read(i: int) -> tuple[float, float]:
        start = time.monotonic()
        found = query_table(
            app, "SELECT count(*) AS n FROM features WHERE entity_id = ?", [f"nobody{i}"]
        )
        assert found.column("n")[0].as_py() == 0
        return start, time.monotonic()

    with ThreadPoolExecutor(READS) as pool:
        spans = list(pool.map(one_read, range(READS)))
    pending.get(timeout=600)
    write_s = time.monotonic() - began
    latencies = [end - start for start, end in spans]
    last_read_s = max(end for _start, end in spans) - began
    return {
        "write_s": write_s,
        "write_taken_s": taken_s,
        "last_read_after_write_start_s": last_read_s,
        "read_p50_ms": percentile(latencies, 0.5) * 1e3,
        "read_p99_ms": percentile(latencies, 0.99) * 1e3,
        "reads_before_write_end": float(last_read_s < write_s),
    }


def main() -> None:
    """Three rounds; the JSON summary last."""
    setup_logging("WARNING")
    logging.getLogger("bench").setLevel(logging.INFO)
    folder = Path(tempfile.mkdtemp(prefix="fstore-bench-rdw-"))
    settings = bench_settings(folder / "state")
    rounds = []
    with running_stack(settings):
        for round_ in range(ROUNDS):
            result = one_round(settings, round_)
            log.info("bench_round %s", {k: round(v, 3) for k, v in result.items()})
            rounds.append(result)
    shutil.rmtree(folder, ignore_errors=True)
    print(
        json.dumps(
            {
                "rows_written": ROWS,
                "reads": READS,
                "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
                "all_reads_before_write_end": all(r["reads_before_write_end"] for r in rounds),
            }
        )
    )


if __name__ == "__main__":
    main()
