"""The read path's guard: exactly one statement, a SELECT, reading only the database.

Refused: anything that writes or changes state (INSERT, UPDATE, DELETE, DDL, ATTACH, COPY,
INSTALL/LOAD, SET, PRAGMA, EXPORT, EXPLAIN ANALYZE...), several statements in one call,
table functions that read files or run SQL (read_csv, read_parquet, glob, query, ...),
DESCRIBE/SUMMARIZE/SHOW inside a query, and any table reference that is not a plain name in
the database's main schema (so no file paths, however they are quoted or split into
schema.table). The server's own reads of files (training sets) use its cursor directly.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterator
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


def _walk(node: Any, parent: Any = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every object of a serialised syntax tree, with the object that holds it."""
    if isinstance(node, dict):
        yield node, parent or {}
        for value in node.values():
            yield from _walk(value, node)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, parent)


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
    tree = json.loads(row[0])
    if tree.get("error"):
        raise QueryError(str(tree.get("error_message", "could not parse the query")))
    return tree["statements"]


def _table_refs(sql: str) -> Iterator[dict[str, Any]]:
    for node, _parent in _walk(_statements(sql)):
        if node.get("type") in ("TABLE_FUNCTION", "BASE_TABLE", "SHOW_REF"):
            yield node


@functools.lru_cache(maxsize=4096)
def check_read_only(sql: str) -> None:
    """Raise ReadOnlyError unless sql is one SELECT that reads only the database.

    Cached per SQL text: callers repeat the same statement with other parameters.
    """
    try:
        statements = _parser().extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    if len(statements) != 1:
        raise ReadOnlyError(f"a read must be exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ReadOnlyError(f"the read path runs SELECT only, got {kind.name}")
    for ref in _table_refs(sql):
        _check_ref(ref)


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
