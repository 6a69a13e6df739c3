"""Arrow IPC: the wire format of write batches and of read results."""

from __future__ import annotations

import pyarrow as pa


def encode_table(table: pa.Table, compression: str | None = None) -> bytes:
    """Arrow IPC stream bytes of a table (optionally LZ4- or ZSTD-compressed)."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_table(payload: bytes | memoryview) -> pa.Table:
    """Inverse of encode_table."""
    return pa.ipc.open_stream(payload).read_all()
