"""The read-only guard on a Store (no services): files, other schemas and catalogs, table
functions that read files or run SQL, side effects and oversized built values are refused
wherever they sit in a statement (CTEs, subqueries, joins, set operations, qualified
names); ordinary reads of the database pass."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.errors import QueryError, ReadOnlyError
from featurestore.reads.features import LATEST_SQL
from featurestore.reads.guard import MAX_BUILT_BYTES, MAX_SQL_BYTES, check_read_only
from featurestore.store.database import OffsetSpan, Store

SECRET = "fstore-guard-marker-7f3a"

# Where a table reference can sit; {src} is the reference.
POSITIONS = {
    "from": "SELECT * FROM {src}",
    "from_first": "FROM {src}",
    "cte": "WITH t AS (SELECT * FROM {src}) SELECT * FROM t",
    "unused_cte": "WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM {src}) SELECT * FROM a",
    "nested_cte": "SELECT * FROM (WITH t AS (SELECT * FROM {src}) SELECT * FROM t)",
    "recursive_cte": (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r, {src} WHERE n < 3) "
        "SELECT * FROM r"
    ),
    "subquery": "SELECT * FROM (SELECT * FROM {src}) s",
    "scalar_subquery": "SELECT (SELECT count(*) FROM {src}) AS n",
    "exists": "SELECT 1 AS x WHERE EXISTS (SELECT 1 FROM {src})",
    "in_subquery": "SELECT entity_id FROM features WHERE entity_id IN (SELECT 'x' FROM {src})",
    "union": "SELECT 1 AS x UNION ALL SELECT 1 FROM {src}",
    "except": "SELECT 1 AS x EXCEPT SELECT 1 FROM {src}",
    "join": "SELECT * FROM features f JOIN {src} ON true",
    "lateral": "SELECT * FROM features, LATERAL (SELECT * FROM {src}) l",
    "having": "SELECT count(*) FROM features HAVING count(*) > (SELECT count(*) FROM {src})",
    "qualify": (
        "SELECT * FROM features QUALIFY row_number() OVER () <= (SELECT count(*) FROM {src})"
    ),
    "order_by": "SELECT entity_id FROM features ORDER BY (SELECT count(*) FROM {src})",
}

# References that read a file, run SQL, or reach past the database's main schema.
SOURCES = {
    "read_csv": "read_csv('{csv}')",
    "read_csv_auto": "read_csv_auto('{csv}')",
    "read_text": "read_text('{csv}')",
    "read_blob": "read_blob('{csv}')",
    "read_parquet": "read_parquet('{parquet}')",
    "parquet_scan": "parquet_scan('{parquet}')",
    "parquet_metadata": "parquet_metadata('{parquet}')",
    "read_json": "read_json('{json}')",
    "sniff_csv": "sniff_csv('{csv}')",
    "glob": "glob('{dir}/*')",
    "query": "query('SELECT * FROM read_csv(''{csv}'')')",
    "query_table": "query_table('features')",
    "duckdb_secrets": "duckdb_secrets()",
    "duckdb_settings": "duckdb_settings()",
    "qualified_table_function": "main.range(3)",
    "path_string": "'{csv}'",
    "path_identifier": '"{csv}"',
    "path_split_schema_table": '"{csv_stem}".csv',
    "catalog_qualified": "system.main.features",
    "database_qualified": "features.main.features",
    "other_schema": "information_schema.tables",
    "pg_catalog": "pg_catalog.pg_settings",
    "temp_schema": "temp.main.spine",
    "describe": "(DESCRIBE features)",
    "summarize_file": "(SUMMARIZE '{csv}')",
    "show_tables": "(SHOW TABLES)",
}

# Expressions refused wherever they appear.
EXPRESSIONS = {
    "qualified_function": "system.main.repeat('x', 3)",
    "schema_function": "main.lower('X')",
    "nextval": "nextval('seq')",
    "setseed": "setseed(0.5)",
    "write_log": "write_log('x')",
    "huge_repeat": "repeat('x', 1000000000)",
    "huge_lpad": "lpad('x', 1000000000, 'y')",
    "huge_list": "range(1000000000)",
    "huge_series": "generate_series(1, 1000000000)",
    "repeat_of_a_column": "repeat(entity_id, 3)",
    "computed_size": "repeat('x', 10 * 10)",
    "huge_format": "format('{{:>500000000}}', 'x')",
    "dynamic_format_width": "printf('%*d', 500000000, 1)",
    "huge_to_base": "to_base(5, 2, 100000000)",
    "huge_bar": "bar(1, 0, 2, 100000000)",
    "huge_resize": "list_resize([1], 100000000)",
    "repeat_in_a_lambda": "list_transform([1, 2], x -> repeat('a', x))",
}
EXPRESSION_POSITIONS = {
    "select": "SELECT {expr} AS v FROM features",
    "where": "SELECT entity_id FROM features WHERE {expr} IS NOT NULL",
    "cte": "WITH t AS (SELECT {expr} AS v FROM features) SELECT count(*) FROM t",
    "subquery": "SELECT (SELECT {expr} FROM features LIMIT 1) AS v",
    "table_function_argument": "SELECT * FROM unnest([{expr}])",
    "order_by": "SELECT entity_id FROM features ORDER BY {expr}",
}

ACCEPTED = [
    LATEST_SQL.replace("?", "'e1'"),
    "SELECT * FROM features",
    "SELECT * FROM main.features",
    'SELECT * FROM "features"',
    "SELECT count(*) FROM range(100) t(i)",
    "SELECT * FROM generate_series(1, 10)",
    "SELECT * FROM unnest([1, 2, 3])",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM pragma_table_info('features')",
    "WITH t AS (SELECT entity_id FROM features) SELECT count(*) FROM t",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
    "SELECT f.entity_id FROM features f JOIN latest_features l USING (entity_id)",
    "SELECT repeat('-', 80) AS line, lpad('7', 3, '0') AS padded, range(10) AS small",
    "SELECT format('{:.2f}', value) AS v, printf('%5d', 1) AS p FROM features",
    "SELECT entity_id FROM features WHERE entity_id IN (SELECT entity_id FROM latest_features)",
    "SELECT '/etc/passwd' AS just_a_string",
    "SELECT lower(entity_id) || '-' || feature_name AS k FROM features",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files holding the marker: a refused read must never see them."""
    tmp_path = tmp_path_factory.mktemp("files")
    csv = tmp_path / "marker.csv"
    csv.write_text(f"secret\n{SECRET}\n")
    parquet = tmp_path / "marker.parquet"
    json_file = tmp_path / "marker.json"
    json_file.write_text(f'{{"secret": "{SECRET}"}}\n')
    pq.write_table(pa.table({"secret": [SECRET]}), parquet)
    return {
        "csv": str(csv),
        "csv_stem": str(csv.with_suffix("")),
        "parquet": str(parquet),
        "json": str(json_file),
        "dir": str(tmp_path),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One store for the module: the guard refuses before anything runs."""
    store = Store(tmp_path_factory.mktemp("db") / "features.duckdb", threads=1)
    rows = pa.table(
        {
            "entity_id": ["e1", "e2"],
            "feature_name": ["f", "f"],
            "value": [1.0, 2.0],
            "event_timestamp": pa.array([dt.datetime(2024, 1, 1)] * 2, pa.timestamp("us")),
        }
    )
    store.write_batch(rows, pa.array([0, 1], pa.int64()), OffsetSpan("t", 0, 0, 1))
    yield store
    store.close()


def refused(store: Store, sql: str) -> ReadOnlyError:
    with pytest.raises(ReadOnlyError) as caught:
        store.read(sql, None)
    return caught.value


@pytest.mark.parametrize("position", sorted(POSITIONS))
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_files_schemas_and_table_functions_are_refused_anywhere(
    store: Store, files: dict[str, str], source: str, position: str
) -> None:
    sql = POSITIONS[position].format(src=SOURCES[source].format(**files))
    error = refused(store, sql)
    assert SECRET not in str(error)


@pytest.mark.parametrize("position", sorted(EXPRESSION_POSITIONS))
@pytest.mark.parametrize("expression", sorted(EXPRESSIONS))
def test_side_effects_and_unbounded_values_are_refused_anywhere(
    store: Store, expression: str, position: str
) -> None:
    refused(store, EXPRESSION_POSITIONS[position].format(expr=EXPRESSIONS[expression]))


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", r"table function read_csv\(\) is not allowed"),
        ("SELECT * FROM 'x.csv'", "not a table of the database's main schema"),
        ("SELECT * FROM system.main.features", "'system.main.features' is not a table"),
        ("SELECT system.main.repeat('x', 2)", "named with a schema or catalog"),
        ("SELECT nextval('s')", r"nextval\(\) changes state"),
        ("SELECT repeat('x', 1000000)", r"about 1,000,000 bytes; the read path allows 8,192"),
        ("SELECT repeat(entity_id, 2) FROM features", "size must come from literals"),
        ("SELECT * FROM (SHOW TABLES)", "SUMMARIZE and SHOW are not allowed"),
        ("CONNECT", "SELECT only, got a statement DuckDB cannot name"),
    ],
)
def test_each_refusal_names_its_reason(store: Store, sql: str, reason: str) -> None:
    with pytest.raises(ReadOnlyError, match=reason):
        store.read(sql, None)


@pytest.mark.parametrize("sql", ACCEPTED)
def test_reads_of_the_database_pass(store: Store, sql: str) -> None:
    store.read(sql, None)


def test_a_built_value_up_to_the_limit_passes(store: Store) -> None:
    table = store.read(f"SELECT length(repeat('x', {MAX_BUILT_BYTES})) AS n", None)
    assert table.column("n").to_pylist() == [MAX_BUILT_BYTES]
    refused(store, f"SELECT repeat('x', {MAX_BUILT_BYTES + 1})")


def test_an_oversized_statement_is_refused_unparsed() -> None:
    sql = "SELECT 1 AS x" + " " * MAX_SQL_BYTES
    with pytest.raises(ReadOnlyError, match=f"{MAX_SQL_BYTES:,} characters at most"):
        check_read_only(sql)


def test_a_deeply_nested_statement_is_a_clear_error_not_a_crash() -> None:
    depth = 3000
    for sql in (
        "SELECT " + "(" * depth + "1" + ")" * depth,
        "SELECT * FROM " + "(SELECT * FROM " * depth + "features" + ") t" * depth,
        "SELECT " + "abs(" * depth + "1" + ")" * depth,
    ):
        with pytest.raises(QueryError):
            check_read_only(sql)
    check_read_only("SELECT " + "abs(" * 50 + "1" + ")" * 50)  # an ordinary depth passes


def test_a_long_statement_is_checked_every_time(store: Store) -> None:
    # Past the cached size the check runs again (the cache would hold every such text).
    long_ok = "SELECT 1 AS x" + " " * 5000
    check_read_only(long_ok)
    check_read_only(long_ok)
    long_bad = "SELECT * FROM read_csv('/etc/passwd')" + " " * 5000
    for _ in range(2):
        with pytest.raises(ReadOnlyError):
            check_read_only(long_bad)


@pytest.mark.parametrize(
    "source",
    ["read_csv", "read_text", "read_parquet", "read_json", "query", "path_string", "glob"],
)
def test_without_the_guard_these_sources_would_read_the_file(
    store: Store, files: dict[str, str], source: str
) -> None:
    # What the refusals above stop: run unguarded, each of them reads the marker file.
    table = store.read(f"SELECT * FROM {SOURCES[source].format(**files)}", None, guarded=False)
    shown = str(table.to_pylist())
    assert SECRET in shown or "marker.csv" in shown


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO features (entity_id) VALUES ('x')",
        "UPDATE features SET value = 0",
        "DELETE FROM features",
        "CREATE TABLE t AS SELECT * FROM features",
        "CREATE TEMP TABLE t AS SELECT 1",
        "CREATE MACRO m() AS 1",
        "DROP TABLE features",
        "ALTER TABLE features RENAME TO gone",
        "COPY features TO '{dir}/out.csv'",
        "COPY (SELECT 1) TO '{dir}/out.parquet'",
        "EXPORT DATABASE '{dir}/export'",
        "ATTACH '{dir}/other.duckdb' AS other",
        "DETACH other",
        "INSTALL httpfs",
        "LOAD parquet",
        "SET threads = 4",
        "RESET threads",
        "PRAGMA enable_profiling",
        "CALL pragma_version()",
        "EXPLAIN ANALYZE DELETE FROM features",
        "CHECKPOINT",
        "VACUUM",
        "USE memory",
        "BEGIN TRANSACTION",
        "SELECT 1; DELETE FROM features",
        "DELETE FROM features; SELECT 1",
        "WITH d AS (DELETE FROM features RETURNING *) SELECT * FROM d",
        "WITH d AS (UPDATE features SET value = 0 RETURNING *) SELECT count(*) FROM d",
        "WITH d AS (INSERT INTO features (entity_id) VALUES ('x') RETURNING *) SELECT 1",
        "SELECT * FROM (WITH d AS (DELETE FROM features RETURNING *) SELECT * FROM d)",
        "WITH d AS (COPY features TO '{dir}/out3.csv') SELECT 1",
        "SELECT * FROM features; COPY features TO '{dir}/out2.csv'",
    ],
)
def test_anything_but_one_select_is_refused(store: Store, files: dict[str, str], sql: str) -> None:
    rows = store.read("SELECT count(*) AS n FROM features", None).column("n").to_pylist()
    with pytest.raises(QueryError):
        store.read(sql.format(**files), None)
    assert store.read("SELECT count(*) AS n FROM features", None).column("n").to_pylist() == rows
    written = {"out.csv", "out.parquet", "export", "other.duckdb", "out2.csv", "out3.csv"}
    assert not written & {path.name for path in Path(files["dir"]).iterdir()}
