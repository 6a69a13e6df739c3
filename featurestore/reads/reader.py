"""The Reader: how code outside the DuckDB service runs a read there.

Domain code receives a Reader and never knows how the read travels; the Celery client
(tasks.client.CeleryReader) is the one implementation the stack runs.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any, Protocol, TypeVar, cast

import pyarrow as pa
from pydantic import TypeAdapter

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


def map_rows(rows: list[dict[str, Any]], into: type[T]) -> list[T]:
    """Result rows (column name -> value) mapped into `into`, as every Reader does."""
    adapter: TypeAdapter[list[T]] = _adapter(cast(Hashable, into))
    return adapter.validate_python(rows)


@functools.lru_cache(maxsize=256)
def _adapter(into: Any) -> TypeAdapter[Any]:
    # Building an adapter costs far more than the mapping of a small result (README, Benchmarks).
    return TypeAdapter(list[into])
