"""Training-serving skew: each logged prediction's features against what the offline store
said was true when it was served.

For a prediction served at time S, a feature's truth is the value of `features` for the
entity with the latest event_timestamp <= S among the rows written by S (created_at <= S):
the point-in-time value a training set built at S would have held (ties on event_timestamp:
the row written last, then the largest value, as training sets). Compared per feature:

- differed: the served value is not the truth, or no truth exists (the online store had a
  value the offline store did not have by then);
- mean_abs_diff: mean |served - truth| over the predictions that have a truth;
- staleness: S minus the served value's event_timestamp, p50 and p99 (continuous quantile).

Values given with the request (origin 'request') and ModelInfer rows (no entity) are not
compared. The DuckDB service runs it as a task (build: rows to Parquet as well); other
callers run the same report as a read (report, through a Reader).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from featurestore import sql
from featurestore.errors import ValidationError
from featurestore.logs import quoted
from featurestore.reads.reader import Reader

log = logging.getLogger(__name__)

# Unbounded ends of the served-time range, as TIMESTAMP values (no NULL-or tests in SQL).
EARLIEST = dt.datetime(1, 1, 1)
LATEST = dt.datetime(9999, 12, 31)

# One row per (prediction, compared feature); parameters: model, since (incl.), until (excl.)
# as ISO-8601 text.
ROWS_SQL = """
WITH served AS (
    SELECT request_id, entity_id, model_version, served_at, kafka_partition, kafka_offset,
           f.name AS feature_name, f.origin AS origin, f.value AS served_value,
           f.event_timestamp AS served_event_timestamp
    FROM (
        SELECT request_id, entity_id, model_version, served_at, kafka_partition, kafka_offset,
               unnest(features) AS f
        FROM prediction_log
        WHERE model_id = ? AND entity_id IS NOT NULL
          AND served_at >= CAST(? AS TIMESTAMP) AND served_at < CAST(? AS TIMESTAMP)
    )
    WHERE f.origin <> 'request'
),
truth AS (
    SELECT s.kafka_partition, s.kafka_offset, s.feature_name,
           arg_max(t.value, (t.event_timestamp, t.created_at, t.value)) AS truth_value,
           max(t.event_timestamp) AS truth_event_timestamp
    FROM served s JOIN features t
      ON t.entity_id = s.entity_id AND t.feature_name = s.feature_name
     AND t.event_timestamp <= s.served_at AND t.created_at <= s.served_at
    GROUP BY s.kafka_partition, s.kafka_offset, s.feature_name
)
SELECT s.request_id, s.entity_id, s.model_version, s.served_at, s.feature_name, s.origin,
       s.served_value, s.served_event_timestamp, t.truth_value, t.truth_event_timestamp,
       t.truth_value IS NULL OR s.served_value <> t.truth_value AS differs,
       abs(s.served_value - t.truth_value) AS abs_diff,
       date_diff('microsecond', s.served_event_timestamp, s.served_at) / 1e6 AS staleness_s,
       s.kafka_partition, s.kafka_offset
FROM served s LEFT JOIN truth t
  ON t.kafka_partition = s.kafka_partition AND t.kafka_offset = s.kafka_offset
 AND t.feature_name = s.feature_name
"""

REPORT_SQL = """
SELECT feature_name,
       count(*) AS predictions,
       count(*) FILTER (WHERE differs) AS differed,
       count(*) FILTER (WHERE differs) / count(*) AS differed_share,
       count(*) FILTER (WHERE truth_value IS NULL) AS no_truth,
       avg(abs_diff) AS mean_abs_diff,
       quantile_cont(staleness_s, 0.5) AS staleness_p50_s,
       quantile_cont(staleness_s, 0.99) AS staleness_p99_s
FROM {rows}
GROUP BY feature_name
ORDER BY feature_name
"""


@dataclass(frozen=True)
class FeatureSkew:
    """How one feature's served values compare with the point-in-time truth."""

    feature_name: str
    predictions: int
    differed: int
    differed_share: float
    no_truth: int
    mean_abs_diff: float | None
    staleness_p50_s: float | None
    staleness_p99_s: float | None


@dataclass(frozen=True)
class SkewRequest:
    """What to compare: a model's predictions served in [since, until); where the rows go."""

    model_id: str
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    output_path: Path | None = None


@dataclass(frozen=True)
class SkewReport:
    """The per-feature report, the predictions it covers, and the rows file if any."""

    model_id: str
    predictions: int
    features: list[FeatureSkew]
    rows: int
    output_path: str | None
    seconds: float


def parse_time(text: str) -> dt.datetime:
    """An ISO-8601 time as naive UTC (a zone converted, none taken as UTC)."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"time {text!r} is not ISO-8601 (e.g. 2024-05-01T12:00:00Z)"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _params(model_id: str, since: dt.datetime | None, until: dt.datetime | None) -> list[object]:
    if not model_id:
        raise ValidationError("name the model")
    if since is not None and until is not None and since >= until:
        raise ValidationError(
            f"--since {since.isoformat()} is not before --until {until.isoformat()}"
        )
    # As text: read parameters travel as msgpack, which has no datetime.
    return [model_id, (since or EARLIEST).isoformat(), (until or LATEST).isoformat()]


def report(
    reader: Reader,
    model_id: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    *,
    timeout: float = 60.0,
) -> list[FeatureSkew]:
    """The skew report as a read (one SELECT through the Reader), per feature by name."""
    statement = REPORT_SQL.format(rows=f"({ROWS_SQL})")
    return reader.query(statement, _params(model_id, since, until), FeatureSkew, timeout=timeout)


def build(cur: duckdb.DuckDBPyConnection, request: SkewRequest) -> SkewReport:
    """The report on the DuckDB service's cursor; with an output path, its rows as Parquet."""
    began = time.monotonic()
    params = _params(request.model_id, request.since, request.until)
    cur.execute(f"CREATE OR REPLACE TEMP TABLE skew_rows AS {ROWS_SQL}", params)
    try:
        rows = int(cur.execute("SELECT count(*) FROM skew_rows").fetchall()[0][0])
        predictions = int(
            cur.execute(
                "SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM skew_rows"
            ).fetchall()[0][0]
        )
        output = None
        if request.output_path is not None:
            output = str(request.output_path)
            request.output_path.parent.mkdir(parents=True, exist_ok=True)
            cur.execute(
                "COPY (SELECT * EXCLUDE (kafka_partition, kafka_offset) FROM skew_rows "
                "ORDER BY served_at, kafka_partition, kafka_offset, feature_name) "
                f"TO {sql.literal(output)} (FORMAT parquet)"
            )
        result = cur.execute(REPORT_SQL.format(rows="skew_rows"))
        names = [column[0] for column in result.description or []]
        features = [FeatureSkew(**dict(zip(names, row, strict=True))) for row in result.fetchall()]
    finally:
        cur.execute("DROP TABLE IF EXISTS skew_rows")
    built = SkewReport(
        request.model_id, predictions, features, rows, output, time.monotonic() - began
    )
    log.info(
        "skew_report model_id=%s predictions=%d rows=%d seconds=%.2f output=%s",
        request.model_id,
        predictions,
        rows,
        built.seconds,
        quoted(output or "-"),
    )
    return built
