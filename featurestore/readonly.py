"""The read path's guard: one statement, and a read (SELECT) only."""

from __future__ import annotations

import duckdb

from featurestore.errors import QueryError, ReadOnlyError


def check_read_only(sql: str) -> None:
    """Raise ReadOnlyError unless sql is exactly one SELECT statement."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    if len(statements) != 1:
        raise ReadOnlyError(f"a read must be exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ReadOnlyError(f"the read path runs SELECT only, got {kind.name}")
