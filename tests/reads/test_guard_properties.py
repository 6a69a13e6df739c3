"""Properties of the read-only guard (Hypothesis, no services): no input crashes it, and no
statement it accepts changes the database or reads a file.

Statements come from a small SQL grammar whose atoms are marked: reading a file (a reader
function, a path as a table), reaching past the main schema, a side effect, or building an
oversized value. A statement holding any marked atom must be refused; one the guard
accepts is run on a scratch Store, which must come out unchanged (every table's rows and
checksum, the catalog, the files in its folder) with no file's contents in its result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from featurestore.errors import QueryError, QueryTimeoutError, ReadOnlyError
from featurestore.reads import result_format
from featurestore.reads.guard import check_read_only
from featurestore.reads.limits import Deadline, ReadLimits
from featurestore.store.database import OffsetSpan, Store

SECRET = "fstore-property-marker-51c9"
PROPERTIES = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Sql:
    """A piece of a statement, and whether it holds an atom the guard must refuse."""

    text: str
    refuse: bool = False

    def __add__(self, other: Sql) -> Sql:
        return Sql(self.text + other.text, self.refuse or other.refuse)


def sql(text: str) -> Sql:
    return Sql(text)


class Scratch:
    """A store with rows in its tables and a marker file beside it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.marker = folder / "files" / "marker.csv"
        self.marker.parent.mkdir(parents=True)
        self.marker.write_text(f"secret\n{SECRET}\n")
        self.db_folder = folder / "db"
        self.store = Store(
            self.db_folder / "features.duckdb",
            threads=1,
            limits=ReadLimits(seconds=5.0, max_rows=10_000, max_bytes=1 << 20),
        )
        rows = pa.table(
            {
                "entity_id": [f"e{i}" for i in range(20)],
                "feature_name": [f"f{i % 3}" for i in range(20)],
                "value": [i / 3 for i in range(20)],
                "event_timestamp": pa.array(
                    [dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(20)],
                    pa.timestamp("us"),
                ),
            }
        )
        self.store.write_batch(rows, pa.array(range(20), pa.int64()), OffsetSpan("t", 0, 0, 19))
        self.store.cursor().execute(
            "INSERT INTO latest_features SELECT entity_id, feature_name, value, "
            "event_timestamp, created_at FROM features"
        )

    def fingerprint(self) -> tuple[object, ...]:
        """Everything an accepted read must leave as it was."""
        cur = self.store.cursor()
        tables = cur.execute(
            "SELECT database_name, schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
        ).fetchall()
        contents = [
            cur.execute(
                f'SELECT count(*), sum(hash(t)) FROM "{db}"."{schema}"."{table}" t'
            ).fetchall()
            for db, schema, table in tables
        ]
        catalog = [
            cur.execute(query).fetchall()
            for query in (
                "SELECT database_name, path FROM duckdb_databases() ORDER BY ALL",
                "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY ALL",
                "SELECT sequence_name FROM duckdb_sequences() ORDER BY ALL",
                "SELECT index_name FROM duckdb_indexes() ORDER BY ALL",
                "SELECT table_name, column_name, data_type FROM duckdb_columns() ORDER BY ALL",
                "SELECT function_name FROM duckdb_functions() WHERE NOT internal ORDER BY ALL",
                "SELECT name, value FROM duckdb_settings() ORDER BY ALL",
            )
        ]
        files = sorted(str(path.relative_to(self.folder)) for path in self.folder.rglob("*"))
        return (tables, contents, catalog, files)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    found = Scratch(tmp_path_factory.mktemp("guard-properties"))
    yield found
    found.store.close()


# Atoms of the grammar. {marker} is the marker file's path, {folder} its folder.
SAFE_SOURCES = [
    "features",
    "latest_features",
    "main.features",
    '"features"',
    "ingested_batches",
    "range(5) r(i)",
    "generate_series(1, 3) g(i)",
    "unnest([1, 2, 3]) u(i)",
    "duckdb_tables()",
    "pragma_table_info('features')",
]
FILE_SOURCES = [
    "read_csv('{marker}')",
    "read_csv_auto('{marker}')",
    "read_text('{marker}')",
    "read_blob('{marker}')",
    "read_json_objects('{marker}')",
    "read_parquet('{marker}')",
    "glob('{folder}/*')",
    "sniff_csv('{marker}')",
    "'{marker}'",
    '"{marker}"',
    "query('SELECT * FROM read_text(''{marker}'')')",
    "query_table('features')",
    "main.read_text('{marker}')",
    "system.main.features",
    "information_schema.tables",
    "pg_catalog.pg_class",
    "(DESCRIBE features)",
    "(SUMMARIZE '{marker}')",
    "(SHOW TABLES)",
    "duckdb_secrets()",
    "duckdb_settings()",
]
SAFE_EXPRESSIONS = [
    "1",
    "'a'",
    "NULL",
    "42.5",
    "'{marker}'",  # a path as a string is only text
    "lower('X')",
    "abs(-3)",
    "coalesce(NULL, 2)",
    "repeat('ab', 100)",
    "lpad('7', 5, '0')",
    "range(4)",
    "format('{{:.1f}}', 2.25)",
    "current_date",
    "[1, 2]",
    "{{'k': 1}}",
    "now()",
    "random()",
]
REFUSED_EXPRESSIONS = [
    "system.main.lower('X')",
    "main.abs(-3)",
    "nextval('s')",
    "setseed(0.1)",
    "write_log('x')",
    "repeat('x', 1000000000)",
    "lpad('x', 500000000, 'y')",
    "range(1000000000)",
    "generate_series(1, 100000000)",
    "repeat('x', 10 * 10)",
    "format('{{:>900000000}}', 'x')",
    "to_base(1, 2, 100000000)",
    "list_resize([1], 100000000)",
]

WRITING_CTES = [
    "DELETE FROM features RETURNING 1 AS c",
    "UPDATE latest_features SET value = 0 RETURNING 1 AS c",
    "INSERT INTO latest_state VALUES (7, TIMESTAMP '2024-01-01', 1) RETURNING 1 AS c",
    "COPY features TO '{folder}/copied.csv'",
]


@st.composite
def expressions(draw: st.DrawFn, depth: int) -> Sql:
    # Refused atoms are rare draws, so that many statements hold exactly one (the guard
    # must find it alone) and many hold none (they run).
    kinds = ["safe"] * 8 + ["call"] * 2 + ["refused"] + ["subquery", "exists"] * (depth > 0)
    kind = draw(st.sampled_from(kinds))
    if kind == "safe":
        return sql(draw(st.sampled_from(SAFE_EXPRESSIONS)))
    if kind == "refused":
        return Sql(draw(st.sampled_from(REFUSED_EXPRESSIONS)), refuse=True)
    if kind == "call":
        function = draw(st.sampled_from(["length", "typeof", "md5", "upper"]))
        inner = draw(expressions(depth=0))
        return sql(f"{function}(CAST(") + inner + sql(" AS VARCHAR))")
    if kind == "subquery":
        subquery = sql("(SELECT ") + draw(expressions(0)) + sql(" FROM ") + draw(sources(0))
        return subquery + sql(" LIMIT 1)")
    return sql("EXISTS (") + draw(selects(depth - 1)) + sql(")")


@st.composite
def sources(draw: st.DrawFn, depth: int) -> Sql:
    kind = draw(st.sampled_from(["safe"] * 10 + ["file"] + ["subquery"] * 2 * (depth > 0)))
    if kind == "safe":
        return sql(draw(st.sampled_from(SAFE_SOURCES)))
    if kind == "file":
        return Sql(draw(st.sampled_from(FILE_SOURCES)), refuse=True)
    return sql("(") + draw(selects(depth - 1)) + sql(") s")


@st.composite
def selects(draw: st.DrawFn, depth: int = 2) -> Sql:
    body = sql("SELECT ") + draw(expressions(depth)) + sql(" AS c FROM ") + draw(sources(depth))
    if draw(st.booleans()):
        body = body + sql(", ") + draw(sources(depth))
    if draw(st.booleans()):
        body = body + sql(" WHERE ") + draw(expressions(depth)) + sql(" IS NOT NULL")
    if depth > 0 and draw(st.booleans()):
        if draw(st.integers(0, 9)):
            cte = draw(selects(depth - 1))
        else:  # a write inside a SELECT: the statement is still of type SELECT
            cte = Sql(draw(st.sampled_from(WRITING_CTES)), refuse=True)
        body = sql("WITH t AS (") + cte + sql(") ") + body + sql(" UNION ALL SELECT c FROM t")
    if depth > 0 and draw(st.booleans()):
        body = body + sql(" UNION ALL (") + draw(selects(depth - 1)) + sql(")")
    return body


def concrete(statement: Sql, scratch: Scratch) -> str:
    return statement.text.format(marker=scratch.marker, folder=scratch.marker.parent)


def run_accepted(scratch: Scratch, text: str) -> None:
    """Run a statement the guard accepted; it must leave the store as it was."""
    before = scratch.fingerprint()
    try:
        result = scratch.store.read_result(text, None, deadline=Deadline.for_read(None, 5.0))
    except (QueryError, QueryTimeoutError):
        result = None  # it may fail (a binder error, a limit); it must still change nothing
    assert scratch.fingerprint() == before, f"an accepted read changed the database: {text}"
    if result is not None:
        shown = str(result_format.to_table(result).to_pylist())
        assert SECRET not in shown, f"an accepted read showed the marker file: {text}"


@PROPERTIES
@given(statement=selects())
def test_statements_with_a_refused_atom_are_refused_and_accepted_ones_change_nothing(
    scratch: Scratch, statement: Sql
) -> None:
    text = concrete(statement, scratch)
    try:
        check_read_only(text)
    except QueryError:  # refused, or not parsed: either way it never runs
        return
    assert not statement.refuse, f"the guard accepted a statement it must refuse: {text}"
    run_accepted(scratch, text)


TOKENS = [
    "SELECT", "FROM", "WITH", "AS", "(", ")", ",", ";", "*", "1", "'x'", "features", "t",
    "WHERE", "UNION", "ALL", "JOIN", "ON", "true", "read_csv", "'{marker}'", '"{marker}"',
    "system", ".", "main", "repeat", "range", "query", "COPY", "TO", "INSERT", "INTO",
    "VALUES", "ATTACH", "DROP", "TABLE", "SET", "PRAGMA", "CALL", "DESCRIBE", "LATERAL",
    "RECURSIVE", "--", "/*", "*/", "$1", "?", "::", "VARCHAR", "EXISTS", "IN", "=", "x",
]  # fmt: skip


@PROPERTIES
@given(tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=25))
def test_token_soup_never_crashes_the_guard_and_changes_nothing(
    scratch: Scratch, tokens: list[str]
) -> None:
    text = " ".join(tokens).format(marker=scratch.marker, folder=scratch.marker.parent)
    try:
        check_read_only(text)
    except QueryError:
        return
    if "?" in text or "$1" in text:
        return  # it needs parameters; running it without them only fails
    run_accepted(scratch, text)


@settings(max_examples=500, deadline=None, database=None)
@given(text=st.text(max_size=300))
@example(text="CONNECT")  # a statement type DuckDB's Python enum cannot name
def test_arbitrary_text_never_crashes_the_guard(text: str) -> None:
    with contextlib.suppress(ReadOnlyError, QueryError):
        check_read_only(text)


@settings(max_examples=200, deadline=None, database=None)
@given(
    depth=st.integers(min_value=1, max_value=5000), opener=st.sampled_from(["(", "abs(", "[", "-"])
)
def test_deep_nesting_never_crashes_the_guard(depth: int, opener: str) -> None:
    closer = {"(": ")", "abs(": ")", "[": "]", "-": ""}[opener]
    with contextlib.suppress(QueryError):
        check_read_only("SELECT " + opener * depth + "1" + closer * depth)
