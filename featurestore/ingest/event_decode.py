"""Feature-event messages decoded on the bridge's hot path, in two content types.

- JSON (the default, for everyone): msgspec decodes and type-checks each message in C;
  whatever it refuses, and any name it cannot vouch for, goes through
  events.parse_message, the reference rules, which accept or refuse it with their reason.
  So the fast path changes no verdict and no error text, only the cost of good messages.
- Arrow IPC stream (bulk producers, Kafka header `content-type: ARROW_CONTENT_TYPE`): one
  record batch or more with exactly ARROW_SCHEMA, checked column-wise in Arrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.arrow_ipc import decode_table, encode_table
from featurestore.errors import ValidationError
from featurestore.ingest.events import (
    CONTROL_CHARACTERS,
    MAX_NAME_LENGTH,
    Columns,
    parse_message,
    timestamp_micros,
)

JSON_CONTENT_TYPE = "application/json"
ARROW_CONTENT_TYPE = "application/vnd.apache.arrow.stream"
ARROW_SCHEMA = pa.schema(
    [
        ("entity_id", pa.string()),
        ("feature_name", pa.string()),
        ("value", pa.float64()),
        # Naive UTC, as stored.
        ("event_timestamp", pa.timestamp("us")),
    ]
)
_COLUMNS = tuple(ARROW_SCHEMA.names)

# No pattern here: msgspec checks a pattern with Python's re per string, which took most of
# the decode's time (README, Benchmarks); control characters are looked for once per message
# instead.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]


class _Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    entity_id: _Name
    feature_name: _Name
    # msgspec takes JSON integers here too, and refuses booleans and out-of-range numbers.
    value: float
    event_timestamp: str


_DECODER = msgspec.json.Decoder(list[_Event] | _Event)


def parse_json(raw: bytes | None) -> Columns:
    """One JSON message's events, validated; a ValidationError as events.parse_message
    gives it when any event is not valid (then none is taken)."""
    if not raw:
        return parse_message(raw)
    try:
        decoded = _DECODER.decode(raw)
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return parse_message(raw)
    events = decoded if isinstance(decoded, list) else [decoded]
    columns = Columns(
        [e.entity_id for e in events],
        [e.feature_name for e in events],
        [e.value for e in events],
    )
    # str.isprintable (C) is False for every control character, and for a few printable
    # ones the reference rules accept (e.g. U+00A0): those take the precise path.
    if not events or not (
        "".join(columns.entity_id).isprintable() and "".join(columns.feature_name).isprintable()
    ):
        return parse_message(raw)
    stamps = [e.event_timestamp for e in events]
    try:
        # Timestamps repeat (a wide file's row becomes several events with one time).
        micros = {text: timestamp_micros(text) for text in set(stamps)}
    except ValidationError:
        return parse_message(raw)
    columns.event_timestamp = list(map(micros.__getitem__, stamps))
    return columns


def _check_names(table: pa.Table, name: str) -> None:
    column = table.column(name)
    lengths = pc.utf8_length(column)
    if pc.min(lengths).as_py() < 1:
        raise ValidationError(f"{name} must be a non-empty string, got an empty one")
    if pc.max(lengths).as_py() > MAX_NAME_LENGTH:
        raise ValidationError(f"{name} is longer than {MAX_NAME_LENGTH} characters")
    if pc.any(pc.match_substring_regex(column, CONTROL_CHARACTERS.pattern)).as_py():
        raise ValidationError(f"{name} contains control characters")


def parse_arrow(raw: bytes | None) -> pa.Table:
    """One Arrow IPC message's events (ARROW_SCHEMA), validated with the JSON rules; a
    ValidationError naming what was wrong otherwise (then none is taken)."""
    if not raw:
        raise ValidationError("empty message")
    try:
        table = decode_table(raw)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationError(f"malformed Arrow IPC stream: {exc}") from None
    if table.schema.names != list(_COLUMNS):
        raise ValidationError(
            f"Arrow columns must be {', '.join(_COLUMNS)}, got {', '.join(table.schema.names)}"
        )
    for want, got in zip(ARROW_SCHEMA, table.schema, strict=True):
        if got.type != want.type:
            raise ValidationError(f"{want.name} must be of Arrow type {want.type}, got {got.type}")
    if table.num_rows == 0:
        raise ValidationError("empty list of events")
    for name in _COLUMNS:
        if table.column(name).null_count:
            raise ValidationError(f"{name} must not be null")
    _check_names(table, "entity_id")
    _check_names(table, "feature_name")
    if not pc.all(pc.is_finite(table.column("value"))).as_py():
        raise ValidationError("value must be finite")
    return table.cast(ARROW_SCHEMA)


def parse_features(raw: bytes | None, content_type: str | None = None) -> Columns | pa.Table:
    """A features message in its content type (JSON when none is given)."""
    if content_type is None or content_type == JSON_CONTENT_TYPE:
        return parse_json(raw)
    if content_type == ARROW_CONTENT_TYPE:
        return parse_arrow(raw)
    raise ValidationError(
        f"content-type {content_type[:64]!r} is not accepted (use {JSON_CONTENT_TYPE} or "
        f"{ARROW_CONTENT_TYPE})"
    )


def encode_arrow(table: pa.Table, compression: str | None = None) -> bytes:
    """A features message in the Arrow content type (for producers)."""
    # Uncompressed by default: the producer's Kafka lz4 compresses a whole batch of
    # messages, and librdkafka inflates it off the bridge's Python thread.
    return encode_table(table.cast(ARROW_SCHEMA), compression=compression)


def columns_table(columns: Columns) -> pa.Table:
    """Validated JSON events as an ARROW_SCHEMA table."""
    return pa.Table.from_arrays(
        [
            pa.array(columns.entity_id, pa.string()),
            pa.array(columns.feature_name, pa.string()),
            pa.array(columns.value, pa.float64()),
            pa.array(columns.event_timestamp, pa.int64()).cast(pa.timestamp("us")),
        ],
        schema=ARROW_SCHEMA,
    )


@dataclass
class FeatureRows:
    """A batch's validated events, in message order: Arrow messages as tables, JSON
    messages gathered in lists until the next Arrow message or the end."""

    tables: list[pa.Table] = field(default_factory=list)
    columns: Columns = field(default_factory=Columns)
    rows: int = 0

    def __len__(self) -> int:
        return self.rows

    def extend(self, other: Columns | pa.Table) -> None:
        """Append one message's events."""
        if isinstance(other, pa.Table):
            self._close_columns()
            self.tables.append(other)
            self.rows += other.num_rows
        else:
            self.columns.extend(other)
            self.rows += len(other)

    def _close_columns(self) -> None:
        if len(self.columns):
            self.tables.append(columns_table(self.columns))
            self.columns = Columns()

    def table(self) -> pa.Table:
        """Every event as one ARROW_SCHEMA table."""
        self._close_columns()
        if not self.tables:
            return ARROW_SCHEMA.empty_table()
        return pa.concat_tables(self.tables)
