"""Read results decode to what DuckDB's own Arrow export gives, whichever way they travel
(DuckDB only, no services)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore.errors import ServiceError
from featurestore.reads import result_format
from featurestore.store.database import Store

SIMPLE = """
    SELECT 'a' || i AS v, i % 2 = 0 AS b, (i % 100)::TINYINT AS ti, i::SMALLINT AS si,
           i::INTEGER AS ii, i * 10000000000 AS bi, i / 3 AS f4, i / 7 AS d,
           (DATE '2024-02-28' + i::INTEGER) AS dt,
           TIMESTAMP '2024-02-28 23:59:59.999999' + to_microseconds(i) AS ts
    FROM range(?) t(i)
"""
WITH_NULLS = """
    SELECT NULL::VARCHAR AS v, NULL::BOOLEAN AS b, NULL::INTEGER AS i, NULL::DOUBLE AS d,
           NULL::DATE AS dt, NULL::TIMESTAMP AS ts, 'nan'::DOUBLE AS nan
"""
OTHER_TYPES = """
    SELECT 1.5::DECIMAL(10, 2) AS dec, [1, 2] AS l, {'a': 1} AS s, 'x'::BLOB AS bl,
           TIMESTAMPTZ '2024-01-01 00:00:00+00' AS tz, 5::UBIGINT AS ub, TIME '01:02:03' AS tm
"""
# Years past 9999 (DuckDB's Python rows give them as text) and infinities (Python's last
# and first date): such results go as Arrow, which carries them as they are.
FAR_FUTURE = "SELECT TIMESTAMP '294000-01-01' AS ts, DATE '12000-01-01' AS dt"
INFINITE = """
    SELECT 'infinity'::TIMESTAMP AS ts, '-infinity'::TIMESTAMP AS ts_min,
           'infinity'::DATE AS dt, '-infinity'::DATE AS dt_min
"""
# An infinity among the first rows, and one past them.
INFINITE_LATER = """
    SELECT CASE WHEN i IN (5, ?) THEN 'infinity'::TIMESTAMP ELSE TIMESTAMP '2024-01-01' END AS ts
    FROM range(?) t(i)
"""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "features.duckdb")


def duckdb_arrow(store: Store, sql: str, params: list[object] | None = None) -> pa.Table:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table: pa.Table = store.cursor().execute(sql, params).to_arrow_table()
    return table


def round_trip(store: Store, sql: str, params: list[object] | None = None) -> bytes:
    return result_format.encode(store.read_result(sql, params))


@pytest.mark.parametrize(
    "rows", [0, 1, 10, result_format.MAX_ROWS, result_format.MAX_ROWS + 1, 3000]
)
def test_simple_types_decode_to_duckdbs_arrow(store: Store, rows: int) -> None:
    payload = round_trip(store, SIMPLE, [rows])
    want = duckdb_arrow(store, SIMPLE, [rows])
    got = result_format.decode_table(payload)
    assert got.schema == want.schema
    assert got.equals(want)
    assert result_format.decode_records(payload) == want.to_pylist()


def test_small_results_of_simple_types_travel_as_rows(store: Store) -> None:
    assert isinstance(store.read_result(SIMPLE, [result_format.MAX_ROWS]), result_format.Rows)
    assert isinstance(store.read_result(SIMPLE, [result_format.MAX_ROWS + 1]), pa.Table)
    assert isinstance(store.read_result(OTHER_TYPES, None), pa.Table)


def test_nulls_and_nan(store: Store) -> None:
    payload = round_trip(store, WITH_NULLS)
    got, want = result_format.decode_table(payload), duckdb_arrow(store, WITH_NULLS)
    assert got.schema == want.schema
    assert got.drop_columns(["nan"]).equals(want.drop_columns(["nan"]))  # NaN != NaN
    (record,) = result_format.decode_records(payload)
    assert [record[k] for k in ("v", "b", "i", "d", "dt", "ts")] == [None] * 6
    assert math.isnan(record["nan"])


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        (OTHER_TYPES, None),
        (FAR_FUTURE, None),
        (INFINITE, None),
        (INFINITE_LATER, [result_format.MAX_ROWS + 50, result_format.MAX_ROWS * 3]),
    ],
)
def test_other_results_travel_as_arrow_unchanged(
    store: Store, sql: str, params: list[object] | None
) -> None:
    got = result_format.decode_table(round_trip(store, sql, params))
    want = duckdb_arrow(store, sql, params)
    assert got.schema == want.schema
    assert got.equals(want)


def test_an_unknown_encoding_is_a_clear_error() -> None:
    for decode in (result_format.decode_table, result_format.decode_records):
        with pytest.raises(ServiceError, match="unknown encoding"):
            decode(b"\xff\xff\xff\xffold")


def test_repeated_column_names_are_kept(store: Store) -> None:
    got = result_format.decode_table(round_trip(store, "SELECT 1 AS x, 'b' AS x"))
    assert got.column_names == ["x", "x"]
    assert got.to_pylist() == duckdb_arrow(store, "SELECT 1 AS x, 'b' AS x").to_pylist()
