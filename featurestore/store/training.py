"""Point-in-time training sets: for each (entity_id, timestamp) row of a spine file, the
latest value of each feature at or before that timestamp (featurestore.store.as_of).

Rules: an event counts when event_timestamp <= the row's timestamp. Among events of one
feature with the same event_timestamp, the one written last wins (created_at), then the
largest value. With a maximum age for a feature, a value older than that (timestamp minus
event_timestamp greater than the age) is null; so is a feature with no event before.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from featurestore import sql
from featurestore.errors import ValidationError
from featurestore.logs import quoted
from featurestore.store import as_of

log = logging.getLogger(__name__)

SPINE_TIME_COLUMNS = ("timestamp", "event_timestamp")


@dataclass(frozen=True)
class TrainingRequest:
    """What to build: the spine file, the features, their maximum ages, the output file."""

    spine_path: Path
    features: list[str]
    output_path: Path
    max_age: dict[str, dt.timedelta] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingReport:
    """What was built."""

    rows: int
    features: int
    seconds: float
    output_path: str
    # Asked for, but no spine row found a value: a name mistyped, or not ingested yet.
    features_without_values: list[str] = field(default_factory=list)


def _spine_scan(path: Path) -> str:
    kind = path.suffix.lower()
    if kind == ".parquet":
        return f"read_parquet({sql.literal(str(path))})"
    if kind == ".csv":
        return f"read_csv({sql.literal(str(path))}, header = true)"
    raise ValidationError(f"{path}: the spine must be a .parquet or .csv file")


def parse_max_age(text: str) -> tuple[str, dt.timedelta]:
    """'feature=30d' (s, m, h, d units) into (feature, age)."""
    name, sep, age = text.partition("=")
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if not sep or not name or len(age) < 2 or age[-1] not in units or not age[:-1].isdigit():
        raise ValidationError(f"max age {text!r} must look like feature=30d (units s, m, h, d)")
    return name, dt.timedelta(**{units[age[-1]]: int(age[:-1])})


def build(
    cur: duckdb.DuckDBPyConnection,
    request: TrainingRequest,
    progress: Callable[[int, int], None] = lambda _done, _total: None,
    parts: int | None = None,
) -> TrainingReport:
    """Build the training set on this cursor (the DuckDB service's own) and write Parquet;
    in `parts` threads (featurestore.store.as_of.PARTS unless given)."""
    began = time.monotonic()
    if not request.features:
        raise ValidationError("name at least one feature")
    if not all(request.features):
        raise ValidationError(f"a feature name is empty: {request.features}")
    if len(set(request.features)) != len(request.features):
        raise ValidationError(f"a feature is named twice: {request.features}")
    unknown_ages = set(request.max_age) - set(request.features)
    if unknown_ages:
        raise ValidationError(f"max age given for features not asked for: {sorted(unknown_ages)}")
    if not request.spine_path.is_file():
        raise ValidationError(f"{request.spine_path}: no such file")
    scan = _spine_scan(request.spine_path)
    columns = [str(r[0]) for r in cur.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
    time_column = next((c for c in SPINE_TIME_COLUMNS if c in columns), None)
    if "entity_id" not in columns or time_column is None:
        raise ValidationError(
            f"{request.spine_path}: needs columns entity_id and timestamp; has {columns}"
        )
    label = ", label" if "label" in columns else ""
    spine: pa.Table = cur.sql(
        f"SELECT row_number() OVER () AS __row, CAST(entity_id AS VARCHAR) AS entity_id, "
        f"CAST({sql.identifier(time_column)} AS TIMESTAMP) AS ts{label} FROM {scan}"
    ).to_arrow_table()
    total = 2
    found = as_of.features_as_of(
        cur, spine, request.features, request.max_age, parts or as_of.PARTS
    )
    progress(1, total)
    output = request.output_path
    output.parent.mkdir(parents=True, exist_ok=True)
    cur.register("training_found", found)
    try:
        cur.execute(
            f"COPY (SELECT entity_id, ts AS timestamp{label}, {as_of.named(request.features)} "
            f"FROM training_found ORDER BY __row) TO {sql.literal(str(output))} (FORMAT parquet)"
        )
    finally:
        cur.unregister("training_found")
    rows = spine.num_rows
    without = [
        name
        for k, name in enumerate(request.features)
        if rows and found.column(f"v{k}").null_count == found.num_rows
    ]
    progress(total, total)
    report = TrainingReport(
        rows, len(request.features), time.monotonic() - began, str(output), without
    )
    log.info(
        "training_set rows=%d features=%d seconds=%.1f output=%s",
        report.rows,
        report.features,
        report.seconds,
        quoted(report.output_path),
    )
    return report


@dataclass(frozen=True)
class LogTrainingRequest:
    """A training set from the prediction log: the spine's labels joined with the feature
    values a model was served."""

    spine_path: Path
    model_id: str
    output_path: Path


@dataclass(frozen=True)
class LogTrainingReport:
    """What was built: spine rows, rows that found a logged prediction, feature columns."""

    rows: int
    matched: int
    features: list[str]
    seconds: float
    output_path: str


def build_from_log(
    cur: duckdb.DuckDBPyConnection, request: LogTrainingRequest
) -> LogTrainingReport:
    """For each spine row (entity_id, timestamp, label), the model's latest logged
    prediction for the entity served at or before the timestamp: its feature values exactly
    as served (null when there is none), with its request id, version and served time."""
    began = time.monotonic()
    if not request.spine_path.is_file():
        raise ValidationError(f"{request.spine_path}: no such file")
    scan = _spine_scan(request.spine_path)
    columns = [str(r[0]) for r in cur.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
    time_column = next((c for c in SPINE_TIME_COLUMNS if c in columns), None)
    if "entity_id" not in columns or time_column is None or "label" not in columns:
        raise ValidationError(
            f"{request.spine_path}: needs columns entity_id, timestamp and label; has {columns}"
        )
    names = [
        str(row[0])
        for row in cur.execute(
            "SELECT name FROM (SELECT unnest(list_transform(features, lambda x: x.name)) AS name, "
            "unnest(range(len(features))) AS position FROM prediction_log WHERE model_id = ?) "
            "GROUP BY name ORDER BY min(position), name",
            [request.model_id],
        ).fetchall()
    ]
    if not names:
        raise ValidationError(f"no logged predictions of model {request.model_id!r}")
    # The served value of each feature, by name, out of the record's list of structs.
    selected = ", ".join(
        f"list_filter(p.features, lambda x: x.name = {sql.literal(n)})[1].value "
        f"AS {sql.identifier(n)}"
        for n in names
    )
    output = request.output_path
    output.parent.mkdir(parents=True, exist_ok=True)
    # Predictions served in the same microsecond: the one logged last (highest offset).
    cur.execute(
        f"""COPY (
            SELECT s.entity_id, s.ts AS timestamp, s.label, p.request_id, p.model_version,
                   p.served_at, {selected}
            FROM (SELECT row_number() OVER () AS __row, CAST(entity_id AS VARCHAR) AS entity_id,
                         CAST({sql.identifier(time_column)} AS TIMESTAMP) AS ts, label
                  FROM {scan}) s
            ASOF LEFT JOIN (
                SELECT entity_id, served_at,
                       arg_max(request_id, (kafka_partition, kafka_offset)) AS request_id,
                       arg_max(model_version, (kafka_partition, kafka_offset)) AS model_version,
                       arg_max(features, (kafka_partition, kafka_offset)) AS features
                FROM prediction_log WHERE model_id = ? AND entity_id IS NOT NULL
                GROUP BY entity_id, served_at
            ) p ON s.entity_id = p.entity_id AND s.ts >= p.served_at
            ORDER BY s.__row
        ) TO {sql.literal(str(output))} (FORMAT parquet)""",
        [request.model_id],
    )
    counted = cur.execute(
        f"SELECT count(*), count(request_id) FROM read_parquet({sql.literal(str(output))})"
    ).fetchall()[0]
    report = LogTrainingReport(
        int(counted[0]), int(counted[1]), names, time.monotonic() - began, str(output)
    )
    log.info(
        "training_set_from_log model_id=%s rows=%d matched=%d features=%d seconds=%.1f output=%s",
        request.model_id,
        report.rows,
        report.matched,
        len(names),
        report.seconds,
        quoted(report.output_path),
    )
    return report
