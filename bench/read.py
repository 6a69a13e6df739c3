"""make bench-read: reads through Celery against the in-process floor, on 10M rows.

Measures, in one run: the latest-features read for one entity through the DuckDB service
at concurrency 1 and 50 (p50, p99, reads/s), the same query run in-process on the DuckDB
file (the floor, as Python rows and as Arrow), a 1M-row x 10-feature point-in-time training
set, the result encodings (JSON, msgpack, Arrow IPC, and the rows of reads.result_format),
and the latest read during a steady 20k events/s ingest through Kafka, the bridge and the
service, with the worker's RSS growth per million events (bench.read_ingest).

python -m bench.read [--rows N] [--ingest-seconds S] [--ingest-rate R] [--no-training]
[--only-under-ingest] (load, then only the reads under ingest); the last line of output is
one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import msgpack
import pyarrow as pa

from bench.common import bench_settings, latest_catch_up_s, now, percentile, running_stack
from bench.read_ingest import reads_under_ingest
from featurestore import constants
from featurestore.arrow_ipc import decode_table, encode_table
from featurestore.ingest import write_batch
from featurestore.logs import setup_logging
from featurestore.progress import Progress
from featurestore.reads import result_format
from featurestore.reads.features import LATEST_SQL, latest_features
from featurestore.settings import Settings
from featurestore.store.database import ARROW_COPY_WARNING
from tasks.app import configure
from tasks.client.query import CeleryReader, query_table

log = logging.getLogger("bench.read")

ROWS = 10_000_000
ENTITIES = 200_000
FEATURES = 10
CHUNK = 500_000
SAMPLES_C1 = 400
READS_C50 = 4000
SPINE_ROWS = 1_000_000


def load(settings: Settings, rows: int) -> None:
    """Events through the write task (the bridge's path without Kafka)."""
    app = configure(settings)
    con = duckdb.connect()
    pending = []
    with Progress("load", rows) as progress:
        for start in range(0, rows, CHUNK):
            table = con.sql(
                f"""SELECT 'cust_' || (i % {ENTITIES}) AS entity_id,
                           'feature_' || ((i // {ENTITIES}) % {FEATURES}) AS feature_name,
                           random() * 100 AS value,
                           TIMESTAMP '2024-01-01' + to_seconds(i) AS event_timestamp,
                           (i // 10000)::BIGINT AS "offset"
                    FROM range({start}, {start + CHUNK}) t(i)"""
            ).to_arrow_table()
            first, last = start // 10000, (start + CHUNK) // 10000 - 1
            pending.append(
                app.send_task(
                    constants.TASK_WRITE_BATCH,
                    args=[write_batch.encode(table), "bench-read", 0, first, last],
                    queue=settings.write_queue,
                )
            )
            while len(pending) > 2:
                pending.pop(0).get(timeout=600)
            progress.update(CHUNK)
        for result in pending:
            result.get(timeout=600)


# The read the latest-values table replaced: an entity's whole history (a scan, now that
# features has no index on entity_id; it was 1.6 ms with that index).
HISTORY_SQL = """SELECT feature_name, value, event_timestamp, created_at
                 FROM features WHERE entity_id = ?"""


def timed(fn: Any, n: int) -> list[float]:
    """Milliseconds of n calls of fn(i)."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def entity(i: int) -> str:
    return f"cust_{random.Random(i).randrange(ENTITIES)}"


def through_celery(settings: Settings) -> dict[str, float]:
    """Latest-features reads through the DuckDB service, at concurrency 1 and 50, with two
    baselines taken in turn with them (the machine's speed drifts): a task that does nothing
    sent and awaited the plain Celery way, and `SELECT 1` through the query function."""
    app = configure(settings)
    calls = {
        "noop": lambda i: app.send_task(constants.TASK_READ_MANY, args=[[]]).get(timeout=10),
        "select1": lambda i: query_table(app, "SELECT 1 AS one"),
        "read": lambda i: latest_features(CeleryReader(app), entity(i)),
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        timed(call, 50)  # warm-up
    for i in range(SAMPLES_C1):
        for name, call in calls.items():
            samples[name] += timed(lambda _j, c=call, k=i: c(k), 1)
    c1 = samples["read"]
    began = now()
    with ThreadPoolExecutor(50) as pool:
        c50 = list(
            pool.map(
                lambda i: timed(lambda j: latest_features(CeleryReader(app), entity(j)), 1)[0],
                range(READS_C50),
            )
        )
    elapsed = now() - began
    return {
        "read_p50_ms": percentile(c1, 0.5),
        "read_p99_ms": percentile(c1, 0.99),
        "celery_noop_p50_ms": percentile(samples["noop"], 0.5),
        "celery_noop_p99_ms": percentile(samples["noop"], 0.99),
        "select1_p50_ms": percentile(samples["select1"], 0.5),
        "select1_p99_ms": percentile(samples["select1"], 0.99),
        "c50_p50_ms": percentile(c50, 0.5),
        "c50_p99_ms": percentile(c50, 0.99),
        "c50_reads_per_s": READS_C50 / elapsed,
    }


def training_set(settings: Settings, folder: Path, rows: int) -> float:
    """Seconds for a 1M-row x 10-feature point-in-time training set."""
    spine = folder / "spine.parquet"
    duckdb.sql(
        f"""COPY (SELECT 'cust_' || (hash(i) % {ENTITIES}) AS entity_id,
                         TIMESTAMP '2024-01-01' + to_seconds(hash(i * 7) % {rows}) AS timestamp,
                         (i % 2) AS label
                  FROM range({SPINE_ROWS}) t(i)) TO '{spine}' (FORMAT parquet)"""
    )
    app = configure(settings)
    began = now()
    report = app.send_task(
        constants.TASK_TRAINING_SET,
        args=[
            str(spine),
            [f"feature_{k}" for k in range(FEATURES)],
            {},
            str(folder / "training.parquet"),
        ],
        queue=settings.read_queue,
    ).get(timeout=900)
    assert report["rows"] == SPINE_ROWS
    return now() - began


def floor(settings: Settings) -> dict[str, float]:
    """The same read in-process on the DuckDB file (after the service has stopped), and the
    entity-history read that it replaced."""
    warnings.filterwarnings("ignore", message=ARROW_COPY_WARNING)
    con = duckdb.connect(str(settings.duckdb_file), read_only=True)
    con.execute(f"SET threads = {settings.duckdb_threads}")
    out = {}
    reads = {
        "floor": lambda i: con.execute(LATEST_SQL, [entity(i)]).fetchall(),
        # What a read cost the service when every result went as Arrow (as Store does).
        "floor_arrow": lambda i: con.execute(LATEST_SQL, [entity(i)]).to_arrow_table(),
        "history_scan": lambda i: con.execute(HISTORY_SQL, [entity(i)]).fetchall(),
    }
    for name, read in reads.items():
        n = 40 if name == "history_scan" else SAMPLES_C1  # the scan takes 0.1 s a read
        timed(read, n // 8)
        samples = timed(read, n)
        out[f"{name}_p50_ms"] = percentile(samples, 0.5)
        out[f"{name}_p99_ms"] = percentile(samples, 0.99)
    con.close()
    return out


def _round_trip_us(encode: Any, decode: Any, repeat: int = 50) -> tuple[float, int]:
    payload = encode()
    start = time.perf_counter()
    for _ in range(repeat):
        decode(encode())
    return (time.perf_counter() - start) / repeat * 1e6, len(payload)


def rows_of(table: pa.Table) -> result_format.Rows:
    """A table as the rows reads.result_format sends."""
    types = ["VARCHAR", "DOUBLE", "TIMESTAMP"]
    return result_format.Rows(
        table.column_names, types, [tuple(r.values()) for r in table.to_pylist()]
    )


def encodings() -> dict[str, dict[str, float]]:
    """Encode + decode time (us) and size (bytes) of a 10-row and a 10k-row result."""
    out: dict[str, dict[str, float]] = {}
    for rows in (10, 10_000):
        table = pa.table(
            {
                "feature_name": [f"feature_{i % 10}" for i in range(rows)],
                "value": [i * 0.5 for i in range(rows)],
                "event_timestamp": pa.array([dt.datetime(2024, 1, 1)] * rows, pa.timestamp("us")),
            }
        )
        # JSON and msgpack carry timestamps as ISO text, and decode back into dicts.
        records = [
            {**r, "event_timestamp": r["event_timestamp"].isoformat()} for r in table.to_pylist()
        ]
        as_rows = rows_of(table)
        timings = {
            "json": _round_trip_us(lambda r=records: json.dumps(r).encode(), json.loads),
            "msgpack": _round_trip_us(lambda r=records: msgpack.packb(r), msgpack.unpackb),
            "arrow_ipc": _round_trip_us(
                lambda t=table: encode_table(t), lambda b: decode_table(b).to_pylist()
            ),
            # What the service sends for a small result of simple types.
            "wire_rows": _round_trip_us(
                lambda r=as_rows: result_format.encode(r), result_format.decode_records
            ),
        }
        for name, (us, size) in timings.items():
            out[f"{name}_{rows}_rows"] = {"us": round(us, 1), "bytes": size}
    return out


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def arguments() -> argparse.Namespace:
    """The command line: rows loaded, the ingest under reads, whether to build a training set."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS, help="feature rows loaded")
    parser.add_argument(
        "--ingest-seconds", type=float, default=60.0, help="seconds of ingest under reads (0: none)"
    )
    parser.add_argument("--ingest-rate", type=float, default=20_000, help="events/s")
    parser.add_argument("--no-training", action="store_true", help="skip the training set")
    parser.add_argument(
        "--only-under-ingest",
        action="store_true",
        help="load, then only the reads under ingest (no idle reads, training set or floor)",
    )
    return parser.parse_args()


def main() -> None:
    """Run every measurement and print the JSON summary last."""
    args = arguments()
    setup_logging("WARNING")
    for name in ("bench", "featurestore.progress"):
        logging.getLogger(name).setLevel(logging.INFO)
    folder = Path(tempfile.mkdtemp(prefix="fstore-bench-read-"))
    # The worker traces each read task's steps (tasks.read_trace) for the reads under ingest.
    settings = bench_settings(folder / "state", read_trace_file=folder / "read-trace.txt")
    under_ingest: dict[str, Any] = {}
    training_s = float("nan")
    with running_stack(settings):
        load(settings, args.rows)
        catch_up_s = latest_catch_up_s(settings)
        log.info("bench_loaded rows=%d latest_catch_up_s=%.1f", args.rows, catch_up_s)
        celery = {} if args.only_under_ingest else through_celery(settings)
        log.info("bench_celery %s", celery)
        if args.ingest_seconds > 0:
            under_ingest = reads_under_ingest(
                settings,
                folder,
                entity,
                rate=args.ingest_rate,
                seconds=args.ingest_seconds,
                shape=(ENTITIES, FEATURES),
            )
            log.info("bench_under_ingest %s", under_ingest)
        if not (args.no_training or args.only_under_ingest):
            training_s = training_set(settings, folder, args.rows)
            log.info("bench_training seconds=%.1f", training_s)
    if args.only_under_ingest:
        shutil.rmtree(folder, ignore_errors=True)
        print(json.dumps({"rows": args.rows, **_rounded(under_ingest)}))
        return
    floors = floor(settings)
    codecs = encodings()
    shutil.rmtree(folder, ignore_errors=True)
    result = {
        "rows": args.rows,
        "load_average_1m": round(os.getloadavg()[0], 1),
        **{k: round(v, 3) for k, v in celery.items()},
        **{k: round(v, 3) for k, v in floors.items()},
        "read_p50_over_floor": round(celery["read_p50_ms"] / floors["floor_p50_ms"], 2),
        "latest_catch_up_after_load_s": round(catch_up_s, 2),
        "training_1m_x10_s": round(training_s, 2),
        **_rounded(under_ingest),
        "encodings": codecs,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
