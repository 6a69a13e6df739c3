"""Backup of the DuckDB store in-process (no services): the way taken (one snapshot, tables
copied into an ATTACHed file) against EXPORT DATABASE, and what writes pay while it runs.

    python -m bench.backup [ROWS]
"""

from __future__ import annotations

import datetime as dt
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from featurestore.store import backup, merger, restore
from featurestore.store.database import OffsetSpan, Store
from featurestore.store.memory import Memory

BATCH = 10_000


def rows(first: int, n: int) -> tuple[pa.Table, pa.Array, OffsetSpan]:
    """n events at offsets first .. first+n-1, 10 features per entity."""
    ids = range(first, first + n)
    table = pa.table(
        {
            "entity_id": [f"e{i // 10}" for i in ids],
            "feature_name": [f"feature_{i % 10}" for i in ids],
            "value": [float(i % 1000) for i in ids],
            "event_timestamp": pa.array(
                [dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in ids],
                pa.timestamp("us"),
            ),
        }
    )
    return table, pa.array(ids, pa.int64()), OffsetSpan("features", 0, first, first + n - 1)


def fill(store: Store, total: int) -> None:
    """total rows in 100k-row batches, the latest-values table merged."""
    for first in range(0, total, 100_000):
        store.write_batch(*rows(first, min(100_000, total - first)))
    while merger.merge(store.cursor(), max_rows=1_000_000).more:
        pass


def timed(label: str, run: Callable[[], object]) -> float:
    """Wall and CPU seconds of run(), printed."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<44} wall {wall:6.2f} s  cpu {cpu:6.2f} s")
    return wall


def write_latencies(store: Store, first: int, stop: threading.Event) -> list[float]:
    """ms of each 10k-row write batch until stop is set."""
    seconds = []
    while not stop.is_set():
        batch = rows(first, BATCH)
        began = time.perf_counter()
        store.write_batch(*batch)
        seconds.append((time.perf_counter() - began) * 1000)
        first += BATCH
    return seconds


def main(total: int) -> None:
    """Fill a store, then measure each way of taking and restoring a backup."""
    root = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        memory = Memory(320, root / "tmp", 4096)
        store = Store(root / "state" / "features.duckdb", 1, memory=memory)
        fill(store, total)
        store.cursor().execute("CHECKPOINT")
        print(f"{total} rows, file {store.path.stat().st_size / 2**20:.0f} MiB")

        def ours(dest: Path) -> None:
            backup.take(store, dest, {}, lambda _d, _t: None, state_dir=root / "state")

        timed("snapshot + ATTACH + chunked copy (taken)", lambda: ours(root / "b1"))
        cur = store.cursor()
        timed(
            "EXPORT DATABASE (FORMAT parquet)",
            lambda: cur.execute(f"EXPORT DATABASE '{root / 'exp'}' (FORMAT parquet)"),
        )
        timed(
            "restore: file copy and rename (taken)",
            lambda: restore.install(root / "b1", root / "r" / "features.duckdb"),
        )
        timed(
            "restore: rebuild latest values (taken)",
            lambda: restore.rebuild_derived(root / "r" / "features.duckdb", lambda _d, _t: None),
        )

        def import_parquet() -> None:
            with duckdb.connect(str(root / "imp.duckdb")) as con:
                con.execute(f"IMPORT DATABASE '{root / 'exp'}'")

        timed("restore: IMPORT DATABASE", import_parquet)

        stop = threading.Event()
        alone: list[float] = []
        thread = threading.Thread(target=lambda: alone.extend(write_latencies(store, 10**9, stop)))
        thread.start()
        time.sleep(5)
        stop.set()
        thread.join()
        stop = threading.Event()
        during: list[float] = []
        thread = threading.Thread(
            target=lambda: during.extend(write_latencies(store, 2 * 10**9, stop))
        )
        thread.start()
        timed("backup with a writer beside it", lambda: ours(root / "b2"))
        stop.set()
        thread.join()
        for label, values in (("alone", alone), ("during backup", during)):
            print(
                f"10k-row write {label:<14} n={len(values):4d} "
                f"p50 {statistics.median(values):6.1f} ms  max {max(values):7.1f} ms"
            )
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000)
