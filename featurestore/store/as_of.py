"""Features as of each spine row, from the long history (one row per feature value).

One pivot per (entity, event time) holding every asked feature's value at that time, each
feature carried forward through the entity's later event times, then ONE ASOF JOIN; where
a join per feature cost ten scans, ten GROUP BYs and ten joins, and several times the CPU
(bench/training_alternatives.py, 1M spine rows x 10 features over 10M history rows, DuckDB
on one thread; README, Benchmarks).

The spine can be split by a hash of the entity into parts, each built by a thread on a
cursor of its own, so that a batch job gets more cores while DuckDB's `threads` (global to
the database) stays at one for every other query. On this shared 2-core machine one part
was faster in wall time than two, in three runs of that benchmark (each part rescans the
history, so two cost more CPU), and the service's point read during the build did no better
beside two parts than beside one part on two DuckDB threads (README, Benchmarks). Hence
PARTS = 1; the service gives the one part more cores by raising DuckDB's threads for the
build only (featurestore.store.job_threads).
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from featurestore import sql
from featurestore.logs import quoted

log = logging.getLogger(__name__)

PARTS = 1  # see above
KEY = "hash(entity_id)"  # the ASOF JOIN's equality (_joined)

_WINDOW = (
    "OVER (PARTITION BY entity_id ORDER BY event_timestamp "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
)


def features_as_of(
    cur: duckdb.DuckDBPyConnection,
    spine: pa.Table,
    features: list[str],
    max_age: dict[str, dt.timedelta],
    parts: int,
) -> pa.Table:
    """The spine's rows (columns __row, entity_id, ts and any others), each with the latest
    value of each feature at or before ts (ties: written last, then the largest value; null
    when older than its max age, or when there is none) as columns v0..vN; in no order."""
    if parts == 1:
        return _part(cur, spine, features, max_age, 0, 1)
    # cursor(): a connection of its own to the same database, with its own temp tables.
    cursors = [cur.cursor() for _ in range(parts)]
    try:
        with ThreadPoolExecutor(parts, thread_name_prefix="training") as pool:
            futures = [
                pool.submit(_part, c, spine, features, max_age, p, parts)
                for p, c in enumerate(cursors)
            ]
            return pa.concat_tables([f.result() for f in futures])
    finally:
        for c in cursors:
            c.close()


def _part(
    cur: duckdb.DuckDBPyConnection,
    spine: pa.Table,
    features: list[str],
    max_age: dict[str, dt.timedelta],
    part: int,
    parts: int,
) -> pa.Table:
    """One part's rows, in one transaction (one snapshot of the history for the part)."""
    mine = f"hash(entity_id) % {parts} = {part}" if parts > 1 else "true"
    cur.register("training_spine", spine)
    cur.execute("BEGIN TRANSACTION")
    try:
        # max: any of a feature's rows at one time will do here, since every group where a
        # feature has several (n above the values found) is recomputed by _settle_ties with
        # the whole rule. Its state is half arg_max's: under the service's 320 MiB memory
        # limit the pivot took 1.14 CPU-s against 1.45 with arg_max(value, created_at).
        picked = ", ".join(
            f"max(value) FILTER (WHERE feature_name = ?) AS v{k}" for k in range(len(features))
        )
        cur.execute(
            f"""CREATE OR REPLACE TEMP TABLE training_events AS
                SELECT entity_id, event_timestamp, count(*) AS n, {picked}
                FROM features
                WHERE feature_name IN ({", ".join("?" for _ in features)}) AND {mine}
                GROUP BY entity_id, event_timestamp""",
            [*features, *features],
        )
        _settle_ties(cur, features)
        history = _carried(cur, features, max_age)
        selected = ", ".join(
            f"w.v{k} AS v{k}"
            if feature not in max_age
            else f"CASE WHEN s.ts - w.t{k} > INTERVAL {max_age[feature].total_seconds()} SECOND "
            f"THEN NULL ELSE w.v{k} END AS v{k}"
            for k, feature in enumerate(features)
        )
        return _joined(cur, selected, mine, history)
    finally:
        cur.execute("ROLLBACK")  # only temp tables were made; nothing to keep
        cur.unregister("training_spine")


def _joined(cur: duckdb.DuckDBPyConnection, selected: str, mine: str, history: str) -> pa.Table:
    """The ASOF JOIN of the spine's rows with the history, on a hash of the entity (KEY)
    first: its sorts compare 8 bytes instead of the entity's text, 0.75 CPU-s against 1.13
    for 1M spine rows and 1M pivot rows. Two entities sharing a hash can only make a row
    match the other entity's event (when the latest event of both at or before the row's
    time is the row's entity's, it is that entity's latest too), so a row matched to
    another entity betrays one; then the join is redone on the entity's text."""
    for key in (KEY, "entity_id"):
        # sql(), not execute(): DuckDB 2.0 copies a DB-API result's rows once more to Arrow.
        table: pa.Table = cur.sql(
            f"""SELECT s.* EXCLUDE (__key), {selected}, w.entity_id AS __matched
                FROM (SELECT *, {key} AS __key FROM training_spine WHERE {mine}) s
                ASOF LEFT JOIN (SELECT *, {key} AS __key FROM {history}) w
                ON s.__key = w.__key AND s.ts >= w.event_timestamp"""
        ).to_arrow_table()
        other = pc.any(pc.not_equal(table.column("__matched"), table.column("entity_id")))
        if not other.as_py():
            break
        log.info("training_key_shared key=%s retry_key=entity_id", quoted(key))
    return table.drop_columns(["__matched"])


def _carried(
    cur: duckdb.DuckDBPyConnection, features: list[str], max_age: dict[str, dt.timedelta]
) -> str:
    """The relation to join: training_events with each feature's latest value (and its
    event time, for a max age) carried forward. When every row already has every feature
    (features written together, as a pipeline writes them), nothing needs carrying and
    training_events is used as it is: the window is a sizeable share of the build's CPU
    (README, Benchmarks)."""
    complete = " AND ".join(f"v{k} IS NOT NULL" for k in range(len(features)))
    gaps = cur.execute(f"SELECT count(*) FROM training_events WHERE NOT ({complete})")
    if not gaps.fetchall()[0][0]:
        times = "".join(
            f", event_timestamp AS t{k}" for k, f in enumerate(features) if f in max_age
        )
        return f"(SELECT *{times} FROM training_events)"
    carried = []
    for k, feature in enumerate(features):
        carried.append(f"last_value(v{k} IGNORE NULLS) {_WINDOW} AS v{k}")
        if feature in max_age:
            carried.append(
                f"last_value(CASE WHEN v{k} IS NOT NULL THEN event_timestamp END IGNORE NULLS) "
                f"{_WINDOW} AS t{k}"
            )
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE training_wide AS "
        f"SELECT entity_id, event_timestamp, {', '.join(carried)} FROM training_events"
    )
    return "training_wide"


def _settle_ties(cur: duckdb.DuckDBPyConnection, features: list[str]) -> None:
    """Recompute with the whole rule (written last, then the largest value) the rows of
    training_events where a feature has several events at one time (or a null value): the
    pivot's max picked any of them. Ordering by (created_at, value) for every group instead
    made the whole pivot much slower (README, Benchmarks)."""
    present = " + ".join(f"(v{k} IS NOT NULL)::BIGINT" for k in range(len(features)))
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE training_ties AS SELECT entity_id, event_timestamp "
        f"FROM training_events WHERE n > {present}"
    )
    if not cur.execute("SELECT count(*) FROM training_ties").fetchall()[0][0]:
        return
    exact = ", ".join(
        f"arg_max(f.value, (f.created_at, f.value)) FILTER (WHERE f.feature_name = ?) AS v{k}"
        for k in range(len(features))
    )
    assignments = ", ".join(f"v{k} = x.v{k}" for k in range(len(features)))
    cur.execute(
        f"""UPDATE training_events SET {assignments}
            FROM (SELECT f.entity_id, f.event_timestamp, {exact}
                  FROM features f SEMI JOIN training_ties t
                    ON f.entity_id = t.entity_id AND f.event_timestamp = t.event_timestamp
                  WHERE f.feature_name IN ({", ".join("?" for _ in features)})
                  GROUP BY f.entity_id, f.event_timestamp) x
            WHERE training_events.entity_id = x.entity_id
              AND training_events.event_timestamp = x.event_timestamp""",
        [*features, *features],
    )


def named(features: list[str]) -> str:
    """v0..vN renamed to the features' names, for the final SELECT."""
    return ", ".join(f"v{k} AS {sql.identifier(f)}" for k, f in enumerate(features))
