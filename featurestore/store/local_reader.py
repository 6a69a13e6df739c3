"""A Reader over a Store opened in this process: for tests, benchmarks and tools that own
the DuckDB file themselves (never beside a running DuckDB service)."""

from __future__ import annotations

from typing import TypeVar

import pyarrow as pa

from featurestore.reads.reader import Params, map_rows
from featurestore.store.database import Store

T = TypeVar("T")


class LocalReader:
    """Runs reads on a Store in this process, through the same guard and mapping."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def query(
        self, sql: str, params: Params, into: type[T], *, timeout: float | None = None
    ) -> list[T]:
        """Rows of the result mapped into `into`."""
        return map_rows(self.query_table(sql, params).to_pylist(), into)

    def query_table(
        self, sql: str, params: Params = None, *, timeout: float | None = None
    ) -> pa.Table:
        """The result as an Arrow table."""
        return self.store.read(sql, params)
