"""The wire format of read results: rows in msgpack for small results of simple types, Arrow
IPC for the rest.

A small read's cost is mostly fixed: handing a result over as Arrow costs DuckDB the same
however few its rows, and the caller more again to decode it and make Python rows of it.
Fetched as Python rows and packed with msgpack, the latest features of an entity (ten rows)
take a fraction of that (README, Benchmarks). Large results, and results with a column of
any other type, still travel as Arrow IPC, whose cost grows more slowly with the rows.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgpack
import pyarrow as pa

from featurestore.arrow_ipc import decode_table as decode_arrow
from featurestore.arrow_ipc import encode_table
from featurestore.errors import ServiceError

# At most this many rows of a read travel as msgpack rows: past that (four columns, one a
# timestamp) Arrow cost the DuckDB service less (README, Benchmarks).
MAX_ROWS = 100

# DuckDB types that travel as rows, with the Arrow type DuckDB exports each as.
SIMPLE_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(),
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
}

_PYTHON_TYPES: dict[str, type] = {"DATE": dt.date, "TIMESTAMP": dt.datetime}
# DuckDB gives its infinite dates and timestamps as Python's last and first ones; Arrow
# carries them as they are.
_INFINITIES = frozenset({dt.date.max, dt.date.min, dt.datetime.max, dt.datetime.min})

_ROWS = b"R"
_ARROW = b"A"
_TIMESTAMP_EXT = 1  # int64 microseconds since 1970-01-01, no time zone
_DATE_EXT = 2  # int32 days since 1970-01-01
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DAY = _EPOCH.date().toordinal()
_MICROSECOND = dt.timedelta(microseconds=1)
_PACK_I64 = struct.Struct(">q")
_PACK_I32 = struct.Struct(">i")


@dataclass(frozen=True)
class Rows:
    """A small result as Python rows: column names, their DuckDB types, the rows."""

    names: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


Result: TypeAlias = Rows | pa.Table


def column_names(result: Result) -> list[str]:
    """The result's column names, in order."""
    return list(result.names) if isinstance(result, Rows) else result.column_names


def encode(result: Result) -> bytes:
    """The bytes a read's result travels as."""
    if isinstance(result, Rows):
        body: bytes = msgpack.packb([result.names, result.types, result.rows], default=_pack_value)
        return _ROWS + body
    return _ARROW + encode_table(result)


def decode_records(payload: bytes) -> list[dict[str, Any]]:
    """The rows of a result, each as a dict by column name."""
    if payload[:1] == _ROWS:
        names, _types, rows = _unpack(payload)
        return [dict(zip(names, row, strict=True)) for row in rows]
    records: list[dict[str, Any]] = decode_table(payload).to_pylist()
    return records


def decode_table(payload: bytes) -> pa.Table:
    """A result as an Arrow table, with the types DuckDB's own Arrow export gives."""
    if payload[:1] == _ARROW:
        return decode_arrow(memoryview(payload)[1:])
    return rows_table(Rows(*_unpack(payload)))


def to_table(result: Result) -> pa.Table:
    """A result as an Arrow table."""
    return rows_table(result) if isinstance(result, Rows) else result


def rows_table(rows: Rows, schema: pa.Schema | None = None) -> pa.Table:
    """Rows as an Arrow table: of the given schema, or of their DuckDB types' Arrow types."""
    if schema is None:
        schema = pa.schema(
            [pa.field(n, SIMPLE_TYPES[t]) for n, t in zip(rows.names, rows.types, strict=True)]
        )
    columns = list(zip(*rows.rows, strict=True)) if rows.rows else [()] * len(rows.names)
    arrays = [pa.array(v, type=f.type) for v, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def rows_fit(rows: Rows) -> bool:
    """Whether rows carry every value as it is: DuckDB gives text for a date or a timestamp
    beyond Python's years 1-9999, and Python's last or first one for an infinite one."""
    for index, kind in enumerate(rows.types):
        wanted = _PYTHON_TYPES.get(kind)
        if wanted is None:
            continue
        for row in rows.rows:
            value = row[index]
            if value is not None and (not isinstance(value, wanted) or value in _INFINITIES):
                return False
    return True


def _pack_value(value: Any) -> msgpack.ExtType:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        micros = (value - _EPOCH) // _MICROSECOND
        return msgpack.ExtType(_TIMESTAMP_EXT, _PACK_I64.pack(micros))
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return msgpack.ExtType(_DATE_EXT, _PACK_I32.pack(value.toordinal() - _EPOCH_DAY))
    raise TypeError(f"a read result cannot carry {type(value).__name__} as a row value")


def _unpack_value(code: int, data: bytes) -> Any:
    if code == _TIMESTAMP_EXT:
        return _EPOCH + dt.timedelta(0, 0, _PACK_I64.unpack(data)[0])
    if code == _DATE_EXT:
        return dt.date.fromordinal(_PACK_I32.unpack(data)[0] + _EPOCH_DAY)
    return msgpack.ExtType(code, data)


def _unpack(payload: bytes) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
    if payload[:1] != _ROWS:
        raise ServiceError(
            f"a read result in an unknown encoding (first byte {payload[:1]!r}): the DuckDB "
            "service runs another version of featurestore.reads.result_format"
        )
    names, types, rows = msgpack.unpackb(
        memoryview(payload)[1:], ext_hook=_unpack_value, use_list=False
    )
    return list(names), list(types), list(rows)
