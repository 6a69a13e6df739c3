"""The read path's guard: exactly one statement, a SELECT, reading only the database.

Refused: anything that writes or changes state (INSERT, UPDATE, DELETE, DDL, ATTACH, COPY,
INSTALL/LOAD, SET, PRAGMA, EXPORT, EXPLAIN ANALYZE...), also inside a SELECT's WITH clause
(`WITH d AS (DELETE ... RETURNING *) SELECT ...`), several statements in one call,
table functions that read files or run SQL (read_csv, read_parquet, glob, query, ...),
DESCRIBE/SUMMARIZE/SHOW inside a query, any table reference that is not a plain name in
the database's main schema (so no file paths, however they are quoted or split into
schema.table), functions named with a schema or catalog (system.main.repeat would pass by
the checks below), functions with side effects (nextval, setseed, ...), and statements over
MAX_SQL_BYTES. The server's own reads of files (training sets) use its cursor directly.

Functions that build a value to a size one of their arguments gives (repeat, lpad, rpad,
range and generate_series as lists, format and printf widths, ...) must get that size from
literals, and build at most MAX_BUILT_BYTES: DuckDB builds such a value in one call, outside
its memory limit and beyond the reach of an interrupt (`repeat('x', 1e9)` held gigabytes
for seconds: README, Benchmarks). What ordinary functions compose out of values (a
concatenation nested through subqueries, replace() inside replace()) is not bounded here
(README, "Reads").
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import duckdb

from featurestore.errors import QueryError, ReadOnlyError

# Table functions that compute rows without touching files or running other SQL.
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "duckdb_tables",
        "duckdb_columns",
        "duckdb_views",
        "pragma_table_info",
    }
)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Query nodes that only read; any other (INSERT_QUERY_NODE, COPY_QUERY_NODE, ...) is refused.
_READ_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
# Scalar functions that change state (a sequence, the session's random seed, DuckDB's log).
SIDE_EFFECT_FUNCTIONS = frozenset({"nextval", "currval", "setseed", "write_log"})
# A longer statement is refused unparsed; one over CACHED_SQL_BYTES is checked every time
# (the cache holds each statement's text).
MAX_SQL_BYTES = 256 * 1024
CACHED_SQL_BYTES = 4096
# The largest value a function may build to a size given by its arguments. DuckDB runs a
# vector of 2048 rows at a time, so such a value joined to each row's column costs 2048
# times this per vector (16 MiB), and as much again as the vector's Arrow batch.
MAX_BUILT_BYTES = 8 * 1024


def _walk(node: Any, parent: Any = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every object of a serialised syntax tree, with the object that holds it."""
    # Iterative: a deeply nested statement must not overflow Python's stack.
    stack: list[tuple[Any, Any]] = [(node, parent)]
    while stack:
        item, holder = stack.pop()
        if isinstance(item, dict):
            yield item, holder or {}
            stack.extend((value, item) for value in reversed(item.values()))
        elif isinstance(item, list):
            stack.extend((value, holder) for value in reversed(item))


_local = threading.local()


def _parser() -> duckdb.DuckDBPyConnection:
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
    return con


def _statements(sql: str) -> Any:
    """The statements of sql as DuckDB's serialised syntax tree; QueryError if it does not
    parse."""
    row = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0]
    try:
        tree = json.loads(row[0])
    except RecursionError:
        raise QueryError("the statement is nested too deeply to be checked") from None
    if tree.get("error"):
        raise QueryError(str(tree.get("error_message", "could not parse the query")))
    return tree["statements"]


def check_read_only(sql: str) -> None:
    """Raise ReadOnlyError unless sql is one SELECT that reads only the database (QueryError
    when it does not parse).

    Cached per SQL text: callers repeat the same statement with other parameters.
    """
    if len(sql) > MAX_SQL_BYTES:
        raise ReadOnlyError(
            f"a read's statement may be {MAX_SQL_BYTES:,} characters at most, got {len(sql):,}"
        )
    if len(sql) > CACHED_SQL_BYTES:
        _check(sql)
    else:
        _check_cached(sql)


@functools.lru_cache(maxsize=4096)
def _check_cached(sql: str) -> None:
    _check(sql)


def _check(sql: str) -> None:
    try:
        statements = _parser().extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    if len(statements) != 1:
        raise ReadOnlyError(f"a read must be exactly one statement, got {len(statements)}")
    try:
        kind = statements[0].type
    except ValueError:
        # DuckDB's Python enum lags its parser: `CONNECT` parses as statement type 31,
        # which the enum cannot name (found by the property test).
        raise ReadOnlyError(
            "the read path runs SELECT only, got a statement DuckDB cannot name"
        ) from None
    if kind != duckdb.StatementType.SELECT:
        raise ReadOnlyError(f"the read path runs SELECT only, got {kind.name}")
    for node, parent in _walk(_statements(sql)):
        node_type = str(node.get("type", ""))
        if node_type.endswith("_NODE") and node_type not in _READ_NODES:
            # A SELECT statement can hold a write in a WITH clause: `WITH d AS (DELETE FROM
            # features RETURNING *) SELECT * FROM d` deletes; COPY there writes a file.
            shown = node_type.removesuffix("_NODE").removesuffix("_QUERY")
            raise ReadOnlyError(f"a read may hold queries only, got {shown} inside it")
        if node_type in ("TABLE_FUNCTION", "BASE_TABLE", "SHOW_REF"):
            _check_ref(node)
        elif node.get("class") == "FUNCTION" and parent.get("type") != "TABLE_FUNCTION":
            _check_function(node)  # a table function's own call is checked as a table


def _check_ref(ref: dict[str, Any]) -> None:
    if ref["type"] == "SHOW_REF":
        raise ReadOnlyError("DESCRIBE, SUMMARIZE and SHOW are not allowed on the read path")
    if ref["type"] == "TABLE_FUNCTION":
        name = str(ref["function"].get("function_name", "")).lower()
        if name not in SAFE_TABLE_FUNCTIONS or ref["function"].get("schema"):
            raise ReadOnlyError(
                f"table function {name}() is not allowed on the read path "
                "(it reads files or runs SQL)"
            )
        return
    table = str(ref.get("table_name", ""))
    schema, catalog = str(ref.get("schema_name", "")), str(ref.get("catalog_name", ""))
    if not _PLAIN_NAME.match(table) or schema not in ("", "main") or catalog:
        shown = ".".join(part for part in (catalog, schema, table) if part)
        raise ReadOnlyError(
            f"{shown!r} is not a table of the database's main schema: files and other "
            "schemas cannot be read on the read path"
        )


def _check_function(node: dict[str, Any]) -> None:
    name = str(node.get("function_name", "")).lower()
    if node.get("schema") or node.get("catalog"):
        raise ReadOnlyError(
            f"function {name}() is named with a schema or catalog: the read path calls "
            "functions by their plain name only"
        )
    if name in SIDE_EFFECT_FUNCTIONS:
        raise ReadOnlyError(f"{name}() changes state and is not allowed on the read path")
    size = _BUILDERS.get(name)
    if size is None:
        return
    built = size(_arguments(node))
    if built is None:
        raise ReadOnlyError(
            f"{name}() builds a value to a size its arguments give: on the read path that "
            "size must come from literals"
        )
    if built > MAX_BUILT_BYTES:
        raise ReadOnlyError(
            f"{name}() would build a value of about {built:,} bytes; the read path allows "
            f"{MAX_BUILT_BYTES:,}"
        )


def _arguments(node: dict[str, Any]) -> list[dict[str, Any]]:
    if "arguments" in node:
        return [argument["expression"] for argument in node["arguments"]]
    return list(node.get("children", []))


def _number(node: dict[str, Any] | None) -> int | None:
    """A literal number's value (rounded up), or None for anything but a literal number."""
    literal = (node or {}).get("literal") or {}
    if literal.get("kind") not in ("INTEGER", "NUMERIC"):
        return None
    try:
        value = float(literal["text"])
    except (KeyError, ValueError):
        return None
    return int(-(-value // 1)) if value == value and abs(value) < 2**62 else None


def _text(node: dict[str, Any] | None) -> str | None:
    literal = (node or {}).get("literal") or {}
    return str(literal["text"]) if literal.get("kind") == "STRING" else None


def _nth(args: list[dict[str, Any]], index: int) -> dict[str, Any] | None:
    return args[index] if index < len(args) else None


def _times(count: int | None, each: int) -> int | None:
    return None if count is None else max(count, 0) * each


def _repeat(args: list[dict[str, Any]]) -> int | None:
    text, count = _text(_nth(args, 0)), _number(_nth(args, 1))
    return None if text is None else _times(count, len(text.encode()))


def _series(args: list[dict[str, Any]]) -> int | None:
    numbers = [_number(arg) for arg in args]
    values = [number for number in numbers if number is not None]
    if not 1 <= len(numbers) <= 3 or len(values) != len(numbers):
        return None  # timestamps with an interval step, or an expression
    start, stop, step = (0, values[0], 1) if len(values) == 1 else (*values, 1)[:3]
    return None if step == 0 else max((stop - start) // step + 1, 0) * 8


def _format_width(args: list[dict[str, Any]]) -> int | None:
    template = _text(_nth(args, 0))
    if template is None or "*" in template or re.search(r"\{[^}]*\{", template):
        return None  # a width given by another argument
    return len(template) + sum(int(digits) for digits in re.findall(r"\d+", template))


# Bytes a function's value may take, from its arguments (None: not from literals alone).
_BUILDERS: dict[str, Callable[[list[dict[str, Any]]], int | None]] = {
    "repeat": _repeat,
    "lpad": lambda args: _times(_number(_nth(args, 1)), 4),  # up to 4 bytes a character
    "rpad": lambda args: _times(_number(_nth(args, 1)), 4),
    "range": _series,
    "generate_series": _series,
    "list_resize": lambda args: _times(_number(_nth(args, 1)), 8),
    "array_resize": lambda args: _times(_number(_nth(args, 1)), 8),
    "equi_width_bins": lambda args: _times(_number(_nth(args, 2)), 8),
    "bitstring": lambda args: _times(_number(_nth(args, 1)), 1),
    "to_base": lambda args: 64 if len(args) < 3 else _number(args[2]),
    "bar": lambda args: 240 if len(args) < 4 else _times(_number(args[3]), 3),
    "format": _format_width,
    "printf": _format_width,
}


# Where a parameter's value cannot change the type or the name of any result column.
_COMPARED = frozenset({"COMPARISON", "BETWEEN"})
_COMPARED_TYPES = frozenset({"COMPARE_IN", "COMPARE_NOT_IN", "LIMIT_MODIFIER"})


@functools.lru_cache(maxsize=1024)
def parameters_only_compared(sql: str) -> bool:
    """True when every parameter of sql is an operand of a comparison, IN or BETWEEN, or a
    LIMIT or OFFSET: elsewhere (`date_part(?, ts)`, `COLUMNS(?)`, `SELECT ?`) DuckDB binds
    its value as a constant, and the value can change the result's columns."""
    try:
        statements = _statements(sql)
    except QueryError:
        return False
    return all(
        _compared(parent) for node, parent in _walk(statements) if node.get("class") == "PARAMETER"
    )


def _compared(parent: dict[str, Any]) -> bool:
    return parent.get("class") in _COMPARED or parent.get("type") in _COMPARED_TYPES
