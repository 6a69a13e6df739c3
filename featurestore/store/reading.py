"""One read on a DuckDB cursor, its result fetched within the read's row and byte limits.

A small result of simple types is fetched as Python rows (featurestore.reads.result_format).
Anything else is read again as a stream of Arrow record batches, counted as they come, so a
result past a limit stops at the first batch beyond it and is never built whole: DuckDB's
Arrow export of an executed result (to_arrow_table, to_arrow_reader) first takes every row
out of the result (a huge range held hundreds of MiB at once), where a relation's reader
streams in a few (README, Benchmarks). Running the statement again costs such reads one
more execution; the hot reads (the latest features of an entity, a few rows) never take
this path.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from featurestore.errors import QueryError, ReadLimitError
from featurestore.reads import result_format
from featurestore.reads.limits import ReadLimits
from featurestore.store.memory import Memory

# Rows of one Arrow batch: what a result can run past its limits before it stops. One DuckDB
# vector: a batch of long rows holds as much again as the vector (rows joined to a large
# built value made a 16384-row batch huge), and small batches fetched a million plain rows
# as fast as large ones or to_arrow_table (README, Benchmarks).
BATCH_ROWS = 2048

Params = list[object] | dict[str, object] | None


def run(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: Params,
    *,
    as_rows_up_to: int,
    limits: ReadLimits,
) -> result_format.Result:
    """The result of one SELECT: as rows when it has at most `as_rows_up_to` rows of simple
    types, else as Arrow; ReadLimitError past the limits' rows or bytes."""
    # execute() plans once; sql() builds a relation first, which costs every read more
    # (README, Benchmarks: read path).
    result = cur.execute(sql, params)
    if result.description is None:
        raise QueryError("the statement gave no result")
    names = [column[0] for column in result.description]
    types = [str(column[1]) for column in result.description]
    if all(kind in result_format.SIMPLE_TYPES for kind in types):
        rows = result_format.Rows(names, types, result.fetchmany(as_rows_up_to + 1))
        if len(rows.rows) > limits.max_rows:
            raise limits.too_many_rows()
        if len(rows.rows) <= as_rows_up_to and result_format.rows_fit(rows):
            return rows
    cur.abort()  # the rest of this result is not read: the statement runs again as a stream
    return _arrow(cur, sql, params, limits)


def _arrow(
    cur: duckdb.DuckDBPyConnection, sql: str, params: Params, limits: ReadLimits
) -> pa.Table:
    relation = cur.sql(sql, params=params)
    if relation is None:
        raise QueryError("the statement gave no result")
    reader = relation.to_arrow_reader(min(BATCH_ROWS, limits.max_rows + 1))
    try:
        batches: list[pa.RecordBatch] = []
        rows = size = 0
        for batch in reader:
            rows += batch.num_rows
            size += batch.nbytes
            if rows > limits.max_rows:
                raise limits.too_many_rows()
            if size > limits.max_bytes:
                raise limits.too_many_bytes()
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    finally:
        reader.close()  # a reader left open holds the cursor


def query_error(exc: BaseException, memory: Memory | None) -> QueryError:
    """The error a read gets for DuckDB's: its message, or one naming the memory limit."""
    message = str(exc)
    if isinstance(exc, duckdb.OutOfMemoryException) or message.startswith("Out of Memory"):
        limit = f"{memory.limit_mib} MiB" if memory else "its default"
        return ReadLimitError(
            f"the read needed more memory than DuckDB may use ({limit}, "
            "FSTORE_DUCKDB_MEMORY_LIMIT_MIB, with at most FSTORE_DUCKDB_MAX_TEMP_MIB spilled "
            f"to disk): {message.splitlines()[0]}"
        )
    return QueryError(message)


def stopped_for_a_write(memory: Memory | None) -> ReadLimitError:
    """The error of a read stopped because a write needed DuckDB's memory."""
    limit = f"{memory.limit_mib} MiB" if memory else "its default"
    return ReadLimitError(
        f"the read was stopped to free DuckDB's memory ({limit}, "
        "FSTORE_DUCKDB_MEMORY_LIMIT_MIB) for a write: writes come first"
    )
