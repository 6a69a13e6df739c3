"""The one query function every caller uses: parameterised SQL in, typed objects out.

The DuckDB service runs the read in its own process and returns its result through the
Redis result backend (featurestore.reads.result_format); this side waits, decodes and
maps rows into the caller's type.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

import pyarrow as pa
from celery import Celery

from featurestore.errors import QueryTimeoutError
from featurestore.reads import result_format
from featurestore.reads.reader import Params, map_rows
from tasks.client.coalescer import coalescer

T = TypeVar("T")


def query_table(app: Celery, sql: str, params: Params = None, *, timeout: float = 30.0) -> pa.Table:
    """Run a read in the DuckDB service and return its result as an Arrow table.

    Reads asked for at the same moment by threads of this process share one task.
    """
    return result_format.decode_table(_result(app, sql, params, timeout))


def query(
    app: Celery, sql: str, params: Params, into: type[T], *, timeout: float = 30.0
) -> list[T]:
    """Run a read in the DuckDB service and map each row into `into` (a dataclass or
    pydantic model; nested lists of structs included)."""
    return map_rows(result_format.decode_records(_result(app, sql, params, timeout)), into)


def _result(app: Celery, sql: str, params: Params, timeout: float) -> bytes:
    future = coalescer(app).submit(sql, params, timeout)
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        future.cancel()  # its batch may give up its slot, see tasks.client.coalescer
        raise QueryTimeoutError(
            f"the DuckDB service did not answer within {timeout:.1f}s"
        ) from None


class CeleryReader:
    """The Reader (featurestore.reads.reader) of this stack: reads as Celery tasks."""

    def __init__(self, app: Celery, timeout: float = 30.0) -> None:
        self.app = app
        self.timeout = timeout

    def query(
        self, sql: str, params: Params, into: type[T], *, timeout: float | None = None
    ) -> list[T]:
        """Rows of the result mapped into `into`."""
        return query(self.app, sql, params, into, timeout=timeout or self.timeout)

    def query_table(
        self, sql: str, params: Params = None, *, timeout: float | None = None
    ) -> pa.Table:
        """The result as an Arrow table."""
        return query_table(self.app, sql, params, timeout=timeout or self.timeout)
