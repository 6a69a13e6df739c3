"""make bench-ingest-decode: the bridge's parse + validate + batch step, CPU time per 10k events.

The same events (the file producer's messages of a bench-ingest file) go through, in one
run, alternating rounds:
- python_loop: orjson and a Python check per event, columns in lists (the bridge before
  msgspec: events.parse_message);
- msgspec: msgspec decodes and type-checks in C, the rest per message (event_decode.parse_json,
  the bridge's JSON path);
- arrow_json: orjson, then a table per message checked column-wise in Arrow (a candidate,
  kept here only);
- arrow_ipc: the Arrow content type, messages of 1,000 and 10,000 events
  (event_decode.parse_arrow, the bridge's path for bulk producers).
Each ends with the write task's payload (write_batch.encode) for 10k-event batches, and every
variant's payloads must decode to the same rows. The last line is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from bench.ingest import make_events
from bridge.batcher import FEATURES, PendingBatch
from featurestore.errors import ValidationError
from featurestore.ingest import write_batch
from featurestore.ingest.event_decode import (
    ARROW_SCHEMA,
    columns_table,
    encode_arrow,
    parse_arrow,
    parse_json,
)
from featurestore.ingest.events import (
    CONTROL_CHARACTERS,
    MAX_NAME_LENGTH,
    Columns,
    parse_message,
    timestamp_micros,
)
from featurestore.ingest.sources import FileSource

EVENTS = 200_000
ROUNDS = 5
BATCH_ROWS = 10_000
KAFKA_TIME_MS = 1_700_000_000_000

Parse = Callable[[bytes], Columns | pa.Table]


def python_loop(messages: list[bytes]) -> bytes:
    """The bridge before msgspec: Columns of every message, then one table."""
    columns = Columns()
    offsets: list[int] = []
    for offset, raw in enumerate(messages):
        parsed = parse_message(raw)
        columns.extend(parsed)
        offsets.extend([offset] * len(parsed))
    table = columns_table(columns)
    table = table.append_column("offset", pa.array(offsets, pa.int64()))
    times = pa.array([KAFKA_TIME_MS] * len(offsets), pa.int64()).cast(pa.timestamp("ms"))
    return write_batch.encode(table.append_column("kafka_timestamp", times))


def _names_ok(column: pa.ChunkedArray) -> bool:
    lengths = pc.utf8_length(column)
    return bool(
        pc.min(lengths).as_py() >= 1
        and pc.max(lengths).as_py() <= MAX_NAME_LENGTH
        and not pc.any(pc.match_substring_regex(column, CONTROL_CHARACTERS.pattern)).as_py()
    )


def arrow_json(raw: bytes) -> pa.Table:
    """orjson, then the message's rows as a table checked column-wise; anything unusual is
    left to the reference rules (as parse_json does)."""
    rows = orjson.loads(raw)
    rows = rows if isinstance(rows, list) else [rows]
    try:
        # Inferred types: a boolean among the values makes a bool or a failing column,
        # where a float64 schema would turn it into 1.0.
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        table = None
    if (
        table is None
        or table.schema.names != ["entity_id", "feature_name", "value", "event_timestamp"]
        or sum(map(len, rows)) != 4 * len(rows)
        or any(column.null_count for column in table.columns)
        or not all(
            pa.types.is_string(table.column(name).type)
            for name in ("entity_id", "feature_name", "event_timestamp")
        )
        or table.column("value").type not in (pa.int64(), pa.float64())
        or not _names_ok(table.column("entity_id"))
        or not _names_ok(table.column("feature_name"))
    ):
        return columns_table(parse_message(raw))
    stamps = pc.dictionary_encode(table.column("event_timestamp").combine_chunks())
    try:
        micros = [timestamp_micros(text) for text in stamps.dictionary.to_pylist()]
    except ValidationError:
        return columns_table(parse_message(raw))
    times = pc.take(pa.array(micros, pa.int64()), stamps.indices).cast(pa.timestamp("us"))
    return pa.Table.from_arrays(
        [
            table.column("entity_id"),
            table.column("feature_name"),
            table.column("value").cast(pa.float64()),
            times,
        ],
        schema=ARROW_SCHEMA,
    )


def batched(parse: Parse) -> Callable[[list[bytes]], bytes]:
    """The bridge's batch (PendingBatch of the features kind) over one parser."""

    def run(messages: list[bytes]) -> bytes:
        pending = PendingBatch("features", 0, 0, 0, kind=FEATURES, columns=FEATURES.new_rows())
        for offset, raw in enumerate(messages):
            pending.add(offset, parse(raw), KAFKA_TIME_MS)
        return pending.encode()

    return run


def cpu_ms_per_10k(step: Callable[[list[bytes]], bytes], messages: list[bytes]) -> float:
    """CPU milliseconds per 10k events to turn the messages into 10k-event payloads."""
    per_batch = max(1, len(messages) * BATCH_ROWS // EVENTS)
    groups = [messages[i : i + per_batch] for i in range(0, len(messages), per_batch)]
    began = time.process_time()
    for group in groups:
        step(group)
    return (time.process_time() - began) * 1000 / (EVENTS / 10_000)


def same_rows(payloads: dict[str, bytes]) -> None:
    """Every variant's first payload holds the same events."""
    tables = {name: write_batch.decode(p)[0] for name, p in payloads.items()}
    first = next(iter(tables.values()))
    for name, table in tables.items():
        if not table.equals(first):
            raise AssertionError(f"{name} decoded other rows than the reference")


def main() -> None:
    """Time each variant in alternating rounds; print a table, then the JSON summary."""
    folder = Path(tempfile.mkdtemp(prefix="fstore-bench-decode-"))
    make_events(folder / "events.parquet", EVENTS)
    source = FileSource(folder / "events.parquet", 1000)
    json_messages = [m.payload for m in source.messages()]
    source.close()
    arrow_1k = [encode_arrow(columns_table(parse_message(m))) for m in json_messages]
    source = FileSource(folder / "events.parquet", BATCH_ROWS)
    arrow_10k = [encode_arrow(t) for t in source.tables()]
    source.close()
    variants: dict[str, tuple[Callable[[list[bytes]], bytes], list[bytes]]] = {
        "python_loop": (python_loop, json_messages),
        "msgspec": (batched(parse_json), json_messages),
        "arrow_json": (batched(arrow_json), json_messages),
        "arrow_ipc_1k": (batched(parse_arrow), arrow_1k),
        "arrow_ipc_10k": (batched(parse_arrow), arrow_10k),
    }
    # The first 10k events of each: ten messages, or one of 10k.
    same_rows(
        {
            name: step(msgs[: 1 if name == "arrow_ipc_10k" else 10])
            for name, (step, msgs) in variants.items()
        }
    )
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, (step, msgs) in variants.items():
            timings[name].append(cpu_ms_per_10k(step, msgs))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    base = medians["python_loop"]
    print(f"{'variant':15s} {'CPU ms/10k events':>18s} {'speed-up':>9s}")
    for name, value in medians.items():
        print(f"{name:15s} {value:18.2f} {base / value:9.2f}")
    result: dict[str, object] = {"events": EVENTS, "rounds": ROUNDS}
    for name, value in medians.items():
        result[f"{name}_cpu_ms_per_10k"] = round(value, 2)
        if name != "python_loop":
            result[f"{name}_speedup"] = round(base / value, 2)
    result["json_bytes_per_event"] = round(sum(map(len, json_messages)) / EVENTS, 1)
    result["arrow_bytes_per_event"] = round(sum(map(len, arrow_10k)) / EVENTS, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
