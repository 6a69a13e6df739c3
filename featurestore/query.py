"""The one query function every caller uses: parameterised SQL in, typed objects out.

The DuckDB service runs the read in its own process and returns Arrow IPC through the
Redis result backend; this side waits, decodes and maps rows into the caller's type.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pyarrow as pa
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from pydantic import TypeAdapter

from featurestore import constants
from featurestore.errors import QueryTimeoutError

T = TypeVar("T")

Params = list[Any] | dict[str, Any] | None


def encode_table(table: pa.Table) -> bytes:
    """Arrow IPC stream bytes of a result table."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_table(payload: bytes) -> pa.Table:
    """Inverse of encode_table."""
    return pa.ipc.open_stream(payload).read_all()


def query_table(app: Celery, sql: str, params: Params = None, *, timeout: float = 30.0) -> pa.Table:
    """Run a read in the DuckDB service and return its result as an Arrow table."""
    result = app.send_task(constants.TASK_READ, args=[sql, params])
    try:
        payload = result.get(timeout=timeout)
    except CeleryTimeout:
        result.revoke()
        raise QueryTimeoutError(
            f"the DuckDB service did not answer within {timeout:.1f}s "
            f"(task {result.id} on queue {constants.READ_QUEUE})"
        ) from None
    return decode_table(payload)


def query(
    app: Celery, sql: str, params: Params, into: type[T], *, timeout: float = 30.0
) -> list[T]:
    """Run a read in the DuckDB service and map each row into `into` (a dataclass or
    pydantic model; nested lists of structs included)."""
    rows = query_table(app, sql, params, timeout=timeout).to_pylist()
    return TypeAdapter(list[into]).validate_python(rows)  # type: ignore[valid-type]
