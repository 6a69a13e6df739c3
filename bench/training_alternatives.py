"""Ways to build a point-in-time training set from the long history, measured in one run.

A DuckDB file of 200k entities x 5 events x 10 features (10M rows, written in event time
order like the stream writes them) and a 1M-row spine; each way builds the same Parquet
file (checked value by value against featurestore.store.training.build, the one kept).
Wall and CPU seconds of this process (DuckDB's threads included) are printed for each; on a
shared machine the CPU seconds are the steadier figure. The last line is one JSON object.

DuckDB runs under the service's memory limit (settings.duckdb_memory_limit_mib) unless
--memory-limit-mib says otherwise (0: DuckDB's default); --ways picks some ways only (the
first named is the one the others are checked against), so that two can be run in turn.

  python -m bench.training_alternatives [--keep FOLDER] [--ways a,b] [--memory-limit-mib N]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from featurestore.reads.features import LATEST_SQL
from featurestore.settings import Settings
from featurestore.store import merger, training
from featurestore.store.job_threads import JobThreads

ENTITIES = 200_000
EVENTS = 5
FEATURES = [f"feature_{k}" for k in range(10)]
SPINE_ROWS = 1_000_000
WEEK_S = 7 * 86_400
SPINE_SQL = (
    "SELECT row_number() OVER () AS __row, CAST(entity_id AS VARCHAR) AS entity_id, "
    "CAST(timestamp AS TIMESTAMP) AS ts, label FROM read_parquet('{spine}')"
)


def make(folder: Path) -> tuple[Path, Path]:
    """The history file and the spine."""
    db, spine = folder / "history.duckdb", folder / "spine.parquet"
    con = duckdb.connect(str(db))
    con.execute(
        f"""CREATE TABLE features AS SELECT 'cust_' || e AS entity_id,
                   'feature_' || f AS feature_name, random() * 100 AS value,
                   TIMESTAMP '2024-01-01'
                     + to_seconds(k * {WEEK_S} + CAST(hash(e * 5 + k) % {WEEK_S} AS BIGINT))
                     AS event_timestamp,
                   TIMESTAMP '2024-06-01' + to_microseconds(k * {ENTITIES} + e) AS created_at
            FROM range({EVENTS}) b(k), range({ENTITIES}) a(e), range(10) c(f)
            ORDER BY k, e, f"""
    )
    span = EVENTS * WEEK_S + 86_400
    con.execute(
        f"""COPY (SELECT 'cust_' || (hash(i) % {ENTITIES}) AS entity_id,
                   TIMESTAMP '2024-01-01'
                     + to_seconds(CAST(hash(i * 7) % {span} AS BIGINT) - 86400) AS timestamp,
                   i AS label FROM range({SPINE_ROWS}) t(i)) TO '{spine}' (FORMAT parquet)"""
    )
    con.close()
    return db, spine


def joined_per_feature(cur: duckdb.DuckDBPyConnection, spine: Path, out: Path, key: str) -> None:
    """One ASOF JOIN per feature, then a join of the ten results by spine row. key 'grouped':
    each feature's events grouped per event time first, ties by arg_max over (created_at,
    value) (the code before); 'struct': no grouping, the ASOF's own order settles ties on a
    (time, created_at, value) key."""
    cur.execute(f"CREATE OR REPLACE TEMP TABLE spine AS {SPINE_SQL.format(spine=spine)}")
    for k, feature in enumerate(FEATURES):
        if key == "grouped":
            right = (
                "(SELECT entity_id, event_timestamp, arg_max(value, (created_at, value)) AS value "
                "FROM features WHERE feature_name = ? GROUP BY entity_id, event_timestamp)"
            )
            on = "s.ts >= f.event_timestamp"
            left = "spine"
        else:
            right = (
                "(SELECT entity_id, event_timestamp, value, {'t': event_timestamp, "
                "'c': created_at, 'v': value} AS k FROM features WHERE feature_name = ?)"
            )
            on = "s.k >= f.k"
            left = (
                "(SELECT *, {'t': ts, 'c': 'infinity'::TIMESTAMP, 'v': 'inf'::DOUBLE} AS k "
                "FROM spine)"
            )
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE f{k} AS SELECT s.__row, f.value FROM {left} s "
            f"ASOF LEFT JOIN {right} f ON s.entity_id = f.entity_id AND {on}",
            [feature],
        )
    selected = ", ".join(f"f{k}.value AS {f}" for k, f in enumerate(FEATURES))
    joins = " ".join(f"LEFT JOIN f{k} ON f{k}.__row = s.__row" for k in range(len(FEATURES)))
    cur.execute(
        f"COPY (SELECT s.entity_id, s.ts AS timestamp, s.label, {selected} FROM spine s {joins} "
        f"ORDER BY s.__row) TO '{out}' (FORMAT parquet)"
    )


def window_over_long(cur: duckdb.DuckDBPyConnection, spine: Path, out: Path) -> None:
    """No join: spine rows and the long events in one window per entity, ordered by time
    (events before spine rows at one time; ties by created_at, then value), each feature's
    last value carried forward."""
    cur.execute(f"CREATE OR REPLACE TEMP TABLE spine AS {SPINE_SQL.format(spine=spine)}")
    window = (
        "OVER (PARTITION BY entity_id ORDER BY ts, is_spine, created_at, value "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    )
    carried = ", ".join(
        f"last_value(CASE WHEN feature_name = '{f}' THEN value END IGNORE NULLS) {window} AS {f}"
        for f in FEATURES
    )
    cur.execute(
        f"""COPY (SELECT entity_id, ts AS timestamp, label, {", ".join(FEATURES)} FROM (
                SELECT entity_id, ts, is_spine, __row, label, {carried} FROM (
                  SELECT entity_id, ts, 1 AS is_spine, __row, label, NULL::VARCHAR AS feature_name,
                         NULL::DOUBLE AS value, NULL::TIMESTAMP AS created_at FROM spine
                  UNION ALL
                  SELECT entity_id, event_timestamp, 0, NULL, NULL, feature_name, value, created_at
                  FROM features))
              WHERE is_spine = 1 ORDER BY __row) TO '{out}' (FORMAT parquet)"""
    )


def pivot_in_parts(con: duckdb.DuckDBPyConnection, spine: Path, out: Path, parts: int) -> None:
    """The kept way's SQL with the carrying-forward window always (and without the tie
    step: this data has no ties), split by a hash of the entity over `parts` threads."""
    picked = ", ".join(
        f"arg_max(value, created_at) FILTER (WHERE feature_name = '{f}') AS v{k}"
        for k, f in enumerate(FEATURES)
    )
    window = (
        "OVER (PARTITION BY entity_id ORDER BY event_timestamp "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    )
    carried = ", ".join(f"last_value(v{k} IGNORE NULLS) {window} AS v{k}" for k in range(10))
    selected = ", ".join(f"w.v{k} AS {f}" for k, f in enumerate(FEATURES))

    def part(p: int) -> pa.Table:
        cur = con.cursor()
        table = cur.sql(
            f"""WITH wide AS (SELECT entity_id, event_timestamp, {carried} FROM (
                    SELECT entity_id, event_timestamp, {picked} FROM features
                    WHERE hash(entity_id) % {parts} = {p} GROUP BY entity_id, event_timestamp)),
                 spine AS ({SPINE_SQL.format(spine=spine)})
                SELECT s.__row, s.entity_id, s.ts AS timestamp, s.label, {selected}
                FROM spine s ASOF LEFT JOIN wide w
                  ON s.entity_id = w.entity_id AND s.ts >= w.event_timestamp
                WHERE hash(s.entity_id) % {parts} = {p}"""
        ).to_arrow_table()
        cur.close()
        return table

    with ThreadPoolExecutor(parts) as pool:
        result = pa.concat_tables(list(pool.map(part, range(parts))))
    cur = con.cursor()
    cur.register("result", result)
    cur.execute(
        f"COPY (SELECT * EXCLUDE (__row) FROM result ORDER BY __row) TO '{out}' (FORMAT parquet)"
    )


def kept(cur: duckdb.DuckDBPyConnection, spine: Path, out: Path, parts: int | None) -> None:
    """featurestore.store.training.build: one pivot, ties settled, carried forward when
    needed (not on this data: every event has every feature), one ASOF; in parts."""
    training.build(cur, training.TrainingRequest(spine, FEATURES, out), parts=parts)


def kept_raised(cur: duckdb.DuckDBPyConnection, spine: Path, out: Path) -> None:
    """The kept way as the service runs it: DuckDB's threads raised to the service's
    training_threads for the build only (featurestore.store.job_threads)."""
    settings = Settings()
    with JobThreads(settings.duckdb_threads, settings.training_threads).raised(cur):
        kept(cur, spine, out, 1)


def point_reads_during(
    con: duckdb.DuckDBPyConnection, build: Callable[[], None] | None, seconds: float = 8
) -> dict[str, float]:
    """p50 and p99 (ms) of the service's latest-features read of one entity, on a cursor of
    its own, while `build` runs in a thread (or for `seconds` with nothing else running)."""
    cur = con.cursor()
    rng = random.Random(5)
    job = threading.Thread(target=build) if build else None
    if job:
        job.start()
    began, samples = time.perf_counter(), []
    while (job and job.is_alive()) or (not job and time.perf_counter() - began < seconds):
        start = time.perf_counter()
        cur.execute(LATEST_SQL, [f"cust_{rng.randrange(ENTITIES)}"]).fetchall()
        samples.append((time.perf_counter() - start) * 1000)
    if job:
        job.join()
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 3), "p99_ms": round(cuts[98], 3), "reads": len(samples)}


def main() -> None:
    """Build the data, run each way, check each against the kept one, print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="a folder to build the data in and keep")
    parser.add_argument("--ways", help="comma-separated names of the ways to run (default all)")
    parser.add_argument("--memory-limit-mib", type=int, default=Settings().duckdb_memory_limit_mib)
    parser.add_argument("--reads", help="comma-separated point-read cases to run (default all)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="fstore-training-alts-"))
    folder.mkdir(parents=True, exist_ok=True)
    db, spine = (
        (folder / "history.duckdb", folder / "spine.parquet")
        if (folder / "history.duckdb").exists()
        else make(folder)
    )
    con = duckdb.connect(str(db))
    con.execute("SET GLOBAL TimeZone = 'UTC'")
    if args.memory_limit_mib:
        con.execute(f"SET GLOBAL memory_limit = '{args.memory_limit_mib}MiB'")
        con.execute(f"SET GLOBAL temp_directory = '{folder / 'duckdb-tmp'}'")
    per_feature = joined_per_feature
    ways: list[tuple[str, int, Callable[[Path], None]]] = [
        ("kept_in_one_part", 1, lambda out: kept(con.cursor(), spine, out, 1)),
        ("kept_in_two_parts", 1, lambda out: kept(con.cursor(), spine, out, 2)),
        ("ten_asof_grouped", 1, lambda out: per_feature(con.cursor(), spine, out, "grouped")),
        ("ten_asof_struct_key", 1, lambda out: per_feature(con.cursor(), spine, out, "struct")),
        ("window_over_long", 1, lambda out: window_over_long(con.cursor(), spine, out)),
        ("kept_in_one_part_two_duckdb_threads", 2, lambda out: kept(con.cursor(), spine, out, 1)),
        ("pivot_carried_forward_two_parts", 1, lambda out: pivot_in_parts(con, spine, out, 2)),
        ("kept_threads_raised_for_the_job", 1, lambda out: kept_raised(con.cursor(), spine, out)),
    ]  # fmt: skip
    if args.ways is not None:
        named = args.ways.split(",")
        ways = sorted((w for w in ways if w[0] in named), key=lambda w: named.index(w[0]))
    reference = folder / f"{ways[0][0] if ways else 'none'}.parquet"
    # Every column read once first, so that the first way timed does not pay for a cold file.
    con.execute(
        "SELECT max(entity_id), max(feature_name), sum(value), max(event_timestamp), "
        "max(created_at) FROM features"
    ).fetchall()
    figures: dict[str, Any] = {}
    for name, threads, build in ways:
        con.execute(f"SET GLOBAL threads = {threads}")
        out = folder / f"{name}.parquet"
        began, cpu = time.perf_counter(), time.process_time()
        build(out)
        figures[name] = {
            "wall_s": round(time.perf_counter() - began, 2),
            "cpu_s": round(time.process_time() - cpu, 2),
        }
        differ = " OR ".join(f"a.{f} IS DISTINCT FROM b.{f}" for f in FEATURES)
        figures[name]["rows_differing"] = con.execute(
            f"SELECT count(*) FROM read_parquet('{reference}') a "
            f"FULL JOIN read_parquet('{out}') b USING (label) WHERE {differ} "
            f"OR a.label IS NULL OR b.label IS NULL"
        ).fetchall()[0][0]
        print(name, figures[name], flush=True)
    # The service's point read while a training set is built: in one part and in two parts
    # (DuckDB on one thread), against one part with DuckDB's global threads at two (what
    # every read then gets), set before or raised for the build only.
    if not con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'latest_features'"
    ).fetchall()[0][0]:
        con.execute(merger.SCHEMA[0])
        con.execute(merger.SCHEMA[1])
        con.execute(
            "INSERT INTO latest_features SELECT entity_id, feature_name, "
            "arg_max(value, (event_timestamp, created_at, value)), max(event_timestamp), "
            "max(created_at) FROM features GROUP BY ALL"
        )
    reads: dict[str, dict[str, float]] = {}
    cases = (
        ("idle", 1, 0),
        ("one_part", 1, 1),
        ("two_parts", 1, 2),
        ("two_duckdb_threads", 2, 1),
        ("threads_raised_for_the_job", 1, -1),
    )
    for name, threads, parts in cases:
        if args.reads and name not in args.reads.split(","):
            continue
        con.execute(f"SET GLOBAL threads = {threads}")
        out = folder / f"reads_{name}.parquet"
        job: Callable[[], None] | None = None
        if parts > 0:
            job = functools.partial(kept, con.cursor(), spine, out, parts)
        elif parts < 0:
            job = functools.partial(kept_raised, con.cursor(), spine, out)
        reads[name] = point_reads_during(con, job)
        print("point_read_during", name, reads[name], flush=True)
    con.execute("SET GLOBAL threads = 1")
    figures["point_read_during_build"] = reads
    con.close()
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
