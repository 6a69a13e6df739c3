"""The transaction helper leaves its cursor usable whatever fails (no services)."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from featurestore.sql import in_transaction


class CommitFails:
    """A cursor whose commit fails, as DuckDB's does when it runs out of memory."""

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self.cur = cur

    def begin(self) -> Any:
        return self.cur.begin()

    def rollback(self) -> Any:
        return self.cur.rollback()

    def commit(self) -> Any:
        raise duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate")


def test_a_failed_commit_is_rolled_back_and_the_cursor_stays_usable() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER)")
    cur = con.cursor()
    with (
        pytest.raises(duckdb.OutOfMemoryException),
        in_transaction(CommitFails(cur)),  # type: ignore[arg-type]
    ):
        cur.execute("INSERT INTO t VALUES (1)")
    with in_transaction(cur):  # a transaction left open would refuse this begin
        cur.execute("INSERT INTO t VALUES (2)")
    assert con.execute("SELECT i FROM t").fetchall() == [(2,)]
