"""Small SQL helpers: quoting for the few places that must put a name or a path into SQL
text, and a transaction on a cursor."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def in_transaction(cur: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction on the cursor: committed at the end, rolled back on any error."""
    cur.begin()
    try:
        yield cur
    except BaseException:
        cur.rollback()
        raise
    try:
        cur.commit()
    except BaseException:
        # A commit that fails (DuckDB out of memory, say) leaves the transaction aborted,
        # and every later begin() on this cursor fails until it is rolled back: the merger
        # lost every merge after one such commit.
        with contextlib.suppress(duckdb.Error):
            cur.rollback()
        raise
