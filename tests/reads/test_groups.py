"""Reads that share a statement run as one, with exactly the results of running each alone
(DuckDB only, no services)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from featurestore.reads import result_format
from featurestore.reads.groups import GroupedReads, combined_sql, signature
from featurestore.reads.guard import parameters_only_compared
from featurestore.store.database import OffsetSpan, Store

T0 = dt.datetime(2024, 5, 1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "features.duckdb")
    n = 60
    table = pa.table(
        {
            "entity_id": [f"e{i % 6}" for i in range(n)],
            "feature_name": [f"f{i % 4}" for i in range(n)],
            "value": [float(i) for i in range(n)],
            "event_timestamp": pa.array(
                [T0 + dt.timedelta(minutes=i) for i in range(n)], pa.timestamp("us")
            ),
        }
    )
    store.write_batch(table, pa.array(range(n), pa.int64()), OffsetSpan("t", 0, 0, n - 1))
    return store


def alone(store: Store, requests: list[tuple[str, Any]]) -> list[Any]:
    """Each read run by itself through a fresh runner: the reference."""
    return [outcome(GroupedReads(store.read_result).run([r])[0]) for r in requests]


def outcome(result: Any) -> Any:
    return result_format.decode_table(result) if isinstance(result, bytes) else tuple(result)


def grouped(store: Store, requests: list[tuple[str, Any]]) -> list[Any]:
    runner = GroupedReads(counting(store))
    runner.run(requests[:1])  # the statement's column names become known
    STATEMENTS.clear()
    return [outcome(r) for r in runner.run(requests)]


STATEMENTS: list[str] = []


def counting(store: Store) -> Any:
    def read(sql: str, params: Any, **options: Any) -> result_format.Result:
        STATEMENTS.append(sql)
        return store.read_result(sql, params, **options)

    return read


ORDERED = """
    SELECT feature_name, value, event_timestamp FROM features
    WHERE entity_id = ? ORDER BY value DESC LIMIT ?  -- newest first
"""


def test_grouped_results_equal_lone_results_order_and_types_included(store: Store) -> None:
    requests: list[tuple[str, Any]] = [(ORDERED, [f"e{i}", 3 + i % 2]) for i in range(6)]
    requests.append((ORDERED, ["nobody", 3]))  # an empty result in the group
    got = grouped(store, requests)
    assert len(STATEMENTS) == 1, "the seven reads should run as one statement"
    want = alone(store, requests)
    assert got == want
    assert all(g.schema == w.schema for g, w in zip(got, want, strict=True))
    assert [t.column("value").to_pylist() for t in got[:2]] == [
        [54.0, 48.0, 42.0],
        [55.0, 49.0, 43.0, 37.0],
    ]


def test_grouping_switched_off_runs_each_read_alone(store: Store) -> None:
    requests: list[tuple[str, Any]] = [(ORDERED, [f"e{i}", 3]) for i in range(4)]
    runner = GroupedReads(counting(store), grouping=False)
    runner.run(requests[:1])
    STATEMENTS.clear()
    got = [outcome(r) for r in runner.run(requests)]
    assert len(STATEMENTS) == 4
    assert got == alone(store, requests)


def test_one_failing_read_does_not_fail_the_others(store: Store) -> None:
    sql = "SELECT count(*) AS n FROM features WHERE entity_id = ? AND value > ?"
    requests: list[tuple[str, Any]] = [(sql, ["e1", "1"]), (sql, ["e2", "x"]), (sql, ["e3", "2"])]
    results = grouped(store, requests)
    assert results[0].column("n").to_pylist() == [len([i for i in range(7, 60, 6)])]
    assert results[1][0] == "QueryError" and "x" in results[1][1]
    assert results[2].column("n").to_pylist() == [len([i for i in range(3, 60, 6)])]


def test_repeated_column_names_are_not_grouped(store: Store) -> None:
    sql = "SELECT entity_id AS x, feature_name AS X FROM features WHERE value = ?"
    requests: list[tuple[str, Any]] = [(sql, [1.0]), (sql, [5.0])]
    got = grouped(store, requests)
    assert len(STATEMENTS) == 2
    assert [t.column_names for t in got] == [["x", "X"], ["x", "X"]]
    assert got == alone(store, requests)


def test_parameters_of_other_types_go_in_other_groups(store: Store) -> None:
    sql = "SELECT count(*) AS n, min(value) AS low FROM features WHERE value >= ?"
    requests: list[tuple[str, Any]] = [(sql, [1]), (sql, [2**40]), (sql, ["1"]), (sql, [None])]
    requests += requests
    got = grouped(store, requests)
    assert len(STATEMENTS) == 4, "one statement per parameter type"
    want = alone(store, requests)
    assert got == want
    assert [t.schema for t in got] == [t.schema for t in want]


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT date_part(?, event_timestamp) AS p FROM features LIMIT 2", [["year"], ["epoch"]]),
        ("SELECT COLUMNS(?) FROM features LIMIT 2", [["value"], ["entity_id"]]),
        ("SELECT ? AS v", [[1], [2]]),
    ],
)
def test_parameters_that_shape_the_result_are_not_grouped(
    store: Store, sql: str, params: list[Any]
) -> None:
    requests: list[tuple[str, Any]] = [(sql, p) for p in params]
    got = grouped(store, requests)
    assert len(STATEMENTS) == len(requests)
    want = alone(store, requests)
    assert got == want
    assert [t.schema for t in got] == [t.schema for t in want]


def test_parameters_only_compared() -> None:
    assert parameters_only_compared("SELECT a FROM t WHERE b = ? AND c IN (?, ?) LIMIT ?")
    assert parameters_only_compared("SELECT a FROM t WHERE b BETWEEN ? AND ? OFFSET ?")
    assert not parameters_only_compared("SELECT a FROM t WHERE b = ? + 1")
    assert not parameters_only_compared("SELECT date_part(?, ts) FROM t")


def test_refusals_stay_refusals(store: Store) -> None:
    requests: list[tuple[str, Any]] = [("DELETE FROM features", None)] * 2
    assert [r[0] for r in grouped(store, requests)] == ["ReadOnlyError", "ReadOnlyError"]


def test_signature() -> None:
    assert signature(None) == ()
    assert signature({"a": 1}) is None
    assert signature([1, 2**40, 1.5, "a", None, True, T0, T0.date()]) == (
        "integer",
        "bigint",
        "float",
        "str",
        "NoneType",
        "bool",
        "timestamp",
        "date",
    )
    assert signature([2**70]) is None
    assert signature([[1, 2]]) is None


def test_a_line_comment_cannot_swallow_the_other_copies() -> None:
    sql = combined_sql("SELECT 1 AS a -- trailing", 3)
    assert duckdb.connect().execute(sql).fetchall() == [(0, 1), (1, 1), (2, 1)]


def test_a_statement_forgotten_by_another_thread_mid_group_runs_alone(store: Store) -> None:
    requests: list[tuple[str, Any]] = [(ORDERED, [f"e{i}", 3]) for i in range(3)]
    runner: GroupedReads

    def read(sql: str, params: Any, **options: Any) -> result_format.Result:
        if "UNION ALL" in sql:  # another thread clears the cache while this group runs
            runner._names.clear()
        return store.read_result(sql, params, **options)

    runner = GroupedReads(read)
    runner.run(requests[:1])
    got = [outcome(r) for r in runner.run(requests)]
    assert got == alone(store, requests)
