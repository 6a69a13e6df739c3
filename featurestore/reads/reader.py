"""The Reader: how code outside the DuckDB service runs a read there.

Domain code receives a Reader and never knows how the read travels; the Celery client
(tasks.client.CeleryReader) is the one implementation the stack runs.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import pyarrow as pa

T = TypeVar("T")

Params = list[Any] | dict[str, Any] | None


class Reader(Protocol):
    """Runs parameterised, read-only SQL in the DuckDB service."""

    def query(
        self, sql: str, params: Params, into: type[T], *, timeout: float | None = None
    ) -> list[T]:
        """Rows of the result mapped into `into` (a dataclass or pydantic model)."""
        ...

    def query_table(
        self, sql: str, params: Params = None, *, timeout: float | None = None
    ) -> pa.Table:
        """The result as an Arrow table."""
        ...
