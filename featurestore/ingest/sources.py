"""Feature files -> validated JSON messages, in DuckDB (in memory, never the store's file).

A file is CSV, Parquet or JSON Lines, in the long format (entity_id, feature_name, value,
event_timestamp) or the wide format (entity_id, event_timestamp, one column per feature;
empty cells are skipped). Every row is validated with the rules of featurestore.ingest.events,
and a rejected row is reported with its file, line (CSV, JSONL) or row (Parquet) number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from featurestore import sql
from featurestore.errors import ValidationError
from featurestore.ingest.events import FIELDS, MAX_NAME_LENGTH

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_KEYS = ("entity_id", "event_timestamp")


@dataclass(frozen=True)
class Reject:
    """A row that was not accepted, where it was, and why."""

    file: Path
    position: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.position}: {self.reason}"


@dataclass(frozen=True)
class Message:
    """One Kafka message: a JSON array of events, and how many."""

    payload: bytes
    rows: int


def expand(paths: list[Path]) -> list[Path]:
    """Files named, and the feature files in folders named, sorted; unknown kinds refused."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES))
        elif not path.exists():
            raise ValidationError(f"{path}: no such file or folder")
        elif path.suffix.lower() not in SUFFIXES:
            raise ValidationError(f"{path}: unknown file kind (use {', '.join(SUFFIXES)})")
        else:
            files.append(path)
    return files


def _scan(path: Path) -> tuple[str, str]:
    """SQL reading the file with a 1-based position column `pos`, and the position's name."""
    kind = SUFFIXES[path.suffix.lower()]
    quoted = sql.literal(str(path))
    if kind == "parquet":
        return (
            f"SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS pos "
            f"FROM read_parquet({quoted}, file_row_number = true)",
            "row",
        )
    if kind == "csv":
        # As text, so that a bad cell is reported rather than failing the read; line 1 is
        # the header.
        return (
            f"SELECT *, row_number() OVER () + 1 AS pos FROM read_csv({quoted}, header = true, "
            f"all_varchar = true, parallel = false)",
            "line",
        )
    # JSON Lines: one value per line, parsed per row so a malformed line is one reject.
    return (
        f"SELECT line AS __raw, row_number() OVER () AS pos FROM read_csv({quoted}, "
        "columns = {'line': 'VARCHAR'}, header = false, delim = chr(31), quote = '', "
        "escape = '', parallel = false)",
        "line",
    )


def _jsonl_columns() -> str:
    # Only valid JSON reaches the json_* functions: they raise on malformed input, and
    # DuckDB evaluates both sides of AND.
    extract = ", ".join(f"json_extract_string(j, '$.{c}') AS {c}" for c in FIELDS)
    return f"""
        SELECT pos, {extract},
               CASE WHEN j IS NULL THEN 'malformed JSON'
                    WHEN json_type(j) <> 'OBJECT' THEN 'line is not a JSON object'
                    WHEN json_type(j, '$.entity_id') <> 'VARCHAR'
                      THEN 'entity_id must be a string, got ' || lower(json_type(j, '$.entity_id'))
                    WHEN json_type(j, '$.feature_name') <> 'VARCHAR'
                      THEN 'feature_name must be a string, got '
                           || lower(json_type(j, '$.feature_name'))
                    WHEN json_type(j, '$.value') IN ('BOOLEAN', 'VARCHAR')
                      THEN 'value must be a number, got ' || lower(json_type(j, '$.value'))
               END AS pre_reason
        FROM (SELECT pos, CASE WHEN json_valid(__raw) THEN __raw END::JSON AS j FROM raw_rows)
    """


_VALIDATE = f"""
SELECT pos, entity_id, feature_name, num AS value,
       strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS event_timestamp,
       CASE
         WHEN pre_reason IS NOT NULL THEN pre_reason
         WHEN entity_id IS NULL OR entity_id = '' THEN 'entity_id is missing'
         WHEN length(entity_id) > {MAX_NAME_LENGTH}
           THEN 'entity_id is longer than {MAX_NAME_LENGTH} characters'
         WHEN regexp_matches(entity_id, '[\\x00-\\x1f\\x7f-\\x9f]')
           THEN 'entity_id contains control characters'
         WHEN feature_name IS NULL OR feature_name = '' THEN 'feature_name is missing'
         WHEN length(feature_name) > {MAX_NAME_LENGTH}
           THEN 'feature_name is longer than {MAX_NAME_LENGTH} characters'
         WHEN regexp_matches(feature_name, '[\\x00-\\x1f\\x7f-\\x9f]')
           THEN 'feature_name contains control characters'
         WHEN raw_value IS NULL THEN 'value is missing'
         WHEN num IS NULL THEN 'value ' || to_json(left(raw_value, 40)) || ' is not a number'
         WHEN isnan(num) OR isinf(num) THEN 'value must be finite, got ' || raw_value
         WHEN raw_ts IS NULL THEN 'event_timestamp is missing'
         WHEN ts IS NULL
           THEN 'event_timestamp ' || to_json(left(raw_ts, 40)) || ' is not ISO-8601'
         -- DuckDB's timestamps reach far past the bridge's rule (events.timestamp_micros),
         -- which dead-letters the whole message holding such a row.
         WHEN ts < TIMESTAMP '0001-01-01' OR ts >= TIMESTAMP '9999-12-31' + INTERVAL 1 DAY
           THEN 'event_timestamp ' || to_json(left(raw_ts, 40)) || ' is outside years 1-9999 in UTC'
       END AS reason
FROM (
  SELECT pos, pre_reason, entity_id::VARCHAR AS entity_id,
         feature_name::VARCHAR AS feature_name,
         value::VARCHAR AS raw_value,
         -- A BOOLEAN column (Parquet) casts to 1.0 and 0.0; booleans are no values.
         CASE WHEN typeof(value) <> 'BOOLEAN' THEN TRY_CAST(value AS DOUBLE) END AS num,
         event_timestamp::VARCHAR AS raw_ts,
         timezone('UTC', TRY_CAST(event_timestamp AS TIMESTAMPTZ)) AS ts
  FROM long_rows
)
"""


class FileSource:
    """Validated messages and rejects of one feature file."""

    def __init__(self, path: Path, rows_per_message: int) -> None:
        self.path = path
        self.rows_per_message = rows_per_message
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        scan, self.position_name = _scan(path)
        self.wide = False  # one column per feature (set by _long_view)
        if SUFFIXES[path.suffix.lower()] == "jsonl":
            self.con.execute(f"CREATE TEMP VIEW raw_rows AS {scan}")
            self.con.execute(f"CREATE TEMP VIEW source AS {_jsonl_columns()}")
        else:
            self.con.execute(
                f"CREATE TEMP VIEW source AS SELECT *, NULL AS pre_reason FROM ({scan})"
            )
        self._long_view()
        self.con.execute(f"CREATE TEMP TABLE checked AS {_VALIDATE}")

    def _long_view(self) -> None:
        columns = [str(row[0]) for row in self.con.execute("DESCRIBE source").fetchall()]
        data = [c for c in columns if c not in ("pos", "pre_reason")]
        if set(FIELDS) <= set(data):
            extra = sorted(set(data) - set(FIELDS))
            if extra:
                raise ValidationError(f"{self.path}: unexpected column(s) {', '.join(extra)}")
            self.con.execute("CREATE TEMP VIEW long_rows AS SELECT * FROM source")
            return
        missing = [k for k in _KEYS if k not in data]
        features = [c for c in data if c not in _KEYS]
        if missing or not features:
            raise ValidationError(
                f"{self.path}: columns {', '.join(data)} are neither the long format "
                f"({', '.join(FIELDS)}) nor the wide format (entity_id, event_timestamp, "
                "one column per feature)"
            )
        self.wide = True
        keep = "pos, pre_reason, entity_id, event_timestamp"
        casts = ", ".join(
            f"CAST({sql.identifier(c)} AS VARCHAR) AS {sql.identifier(c)}" for c in features
        )
        on = ", ".join(sql.identifier(c) for c in features)
        self.con.execute(
            f"CREATE TEMP VIEW long_rows AS SELECT pos, pre_reason, entity_id, feature_name, "
            f"value, event_timestamp FROM (UNPIVOT (SELECT {keep}, {casts} FROM source) "
            f"ON {on} INTO NAME feature_name VALUE value)"
        )

    def counts(self) -> tuple[int, int]:
        """(accepted rows, rejected rows)."""
        row = self.con.execute(
            "SELECT count(*) FILTER (reason IS NULL), count(*) FILTER (reason IS NOT NULL) "
            "FROM checked"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def rejects(self) -> Iterator[Reject]:
        """Every rejected row, in file order (a wide row's once per reason, a bad value
        with its column)."""
        if self.wide:
            # Each cell of a wide row is an event: a row without its entity was reported
            # once per feature column, and a value without the column that held it.
            query = """
                SELECT pos, CASE WHEN starts_with(reason, 'value')
                                 THEN 'column ' || to_json(feature_name) || ': ' || reason
                                 ELSE reason END AS said
                FROM checked WHERE reason IS NOT NULL GROUP BY pos, said ORDER BY pos, said
            """
        else:
            query = "SELECT pos, reason FROM checked WHERE reason IS NOT NULL ORDER BY pos"
        cur = self.con.execute(query)
        while chunk := cur.fetchmany(10_000):
            for pos, reason in chunk:
                yield Reject(self.path, f"{self.position_name} {pos}", str(reason))

    def messages(self) -> Iterator[Message]:
        """Accepted rows as JSON messages of at most rows_per_message events each."""
        cur = self.con.execute(
            f"""
            SELECT to_json(list({{'entity_id': entity_id, 'feature_name': feature_name,
                                  'value': value, 'event_timestamp': event_timestamp}}
                                ORDER BY n)), count(*)
            FROM (SELECT *, row_number() OVER (ORDER BY pos) - 1 AS n
                  FROM checked WHERE reason IS NULL)
            GROUP BY n // {self.rows_per_message} ORDER BY n // {self.rows_per_message}
            """
        )
        while chunk := cur.fetchmany(100):
            for payload, rows in chunk:
                yield Message(str(payload).encode(), int(rows))

    def tables(self) -> Iterator[pa.Table]:
        """Accepted rows as Arrow tables of at most rows_per_message rows each, with
        event_timestamp a naive UTC timestamp (the Arrow content type of the features topic)."""
        reader = self.con.sql(
            "SELECT entity_id, feature_name, value, "
            "strptime(event_timestamp, '%Y-%m-%dT%H:%M:%S.%fZ') AS event_timestamp "
            "FROM checked WHERE reason IS NULL ORDER BY pos"
        ).to_arrow_reader(self.rows_per_message)
        for batch in reader:
            if batch.num_rows:
                yield pa.Table.from_batches([batch])

    def close(self) -> None:
        """Release the in-memory database."""
        self.con.close()
