"""Feature events on the wire: parsing and validation shared by the producer and the bridge.

A message is a JSON object (one event) or a JSON array of objects. An event has exactly
these fields:

- entity_id: non-empty string without control characters, at most 256 characters
- feature_name: non-empty string without control characters, at most 256 characters
- value: a finite number (NaN and infinity are rejected: they are not feature values,
  and standard JSON cannot carry them); booleans are rejected
- event_timestamp: ISO-8601 string; with a time zone it is converted to UTC, without one
  it is taken as UTC, and must fall in years 1-9999 in UTC. Stored as a naive UTC
  TIMESTAMP with microseconds.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

import orjson

from featurestore.errors import ValidationError

FIELDS = ("entity_id", "feature_name", "value", "event_timestamp")
MAX_NAME_LENGTH = 256
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MIN_MICROS = (dt.datetime.min.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
_MAX_MICROS = (dt.datetime.max.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)


def timestamp_micros(text: object) -> int:
    """Microseconds since the epoch (UTC) of an ISO-8601 timestamp string."""
    if not isinstance(text, str):
        raise ValidationError(f"event_timestamp must be an ISO-8601 string, got {_kind(text)}")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"event_timestamp {text[:64]!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    delta = parsed - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    # An offset can carry a time of year 1 or 9999 past the range of a datetime in UTC,
    # which every reader of the value (the producer's JSON, Predict's response) builds.
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise ValidationError(f"event_timestamp {text[:64]!r} is outside years 1-9999 in UTC")
    return micros


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _name(row: dict[str, object], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{key} must be a non-empty string, got {_kind(value)}")
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(f"{key} is longer than {MAX_NAME_LENGTH} characters")
    if CONTROL_CHARACTERS.search(value):
        raise ValidationError(f"{key} contains control characters")
    return value


def number(value: object, key: str = "value") -> float:
    """The value as a float, or a ValidationError naming `key` and why it is not acceptable."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{key} must be a number, got {_kind(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValidationError(f"{key} must be finite, got {result}")
    return result


@dataclass
class Columns:
    """Validated events as parallel columns, ready for Arrow."""

    entity_id: list[str] = field(default_factory=list)
    feature_name: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    event_timestamp: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entity_id)

    def append_row(self, row: object) -> None:
        """Validate one event (a dict) and append it; on error nothing is appended."""
        if not isinstance(row, dict):
            raise ValidationError(f"event must be a JSON object, got {_kind(row)}")
        extra = row.keys() - set(FIELDS)
        if extra:
            raise ValidationError(f"unknown field(s): {', '.join(sorted(extra))}")
        missing = [key for key in FIELDS if key not in row]
        if missing:
            raise ValidationError(f"missing field(s): {', '.join(missing)}")
        entity, feature = _name(row, "entity_id"), _name(row, "feature_name")
        value, ts = number(row["value"]), timestamp_micros(row["event_timestamp"])
        self.entity_id.append(entity)
        self.feature_name.append(feature)
        self.value.append(value)
        self.event_timestamp.append(ts)

    def extend(self, other: Columns) -> None:
        """Append every event of another Columns."""
        self.entity_id.extend(other.entity_id)
        self.feature_name.extend(other.feature_name)
        self.value.extend(other.value)
        self.event_timestamp.extend(other.event_timestamp)


def _fast_row(row: object, micros: dict[object, int]) -> tuple[str, str, float, int] | None:
    """The event as a tuple when it is plainly valid, else None (the precise path decides).

    Accepts only what Columns.append_row accepts; timestamps are cached per message
    because they repeat (a wide file's row becomes several events with one timestamp).
    """
    if type(row) is not dict or len(row) != 4:
        return None
    entity, feature = row.get("entity_id"), row.get("feature_name")
    value, stamp = row.get("value"), row.get("event_timestamp")
    if not (
        type(entity) is str
        and type(feature) is str
        and 0 < len(entity) <= MAX_NAME_LENGTH
        and 0 < len(feature) <= MAX_NAME_LENGTH
        and entity.isprintable()
        and feature.isprintable()
        and (type(value) is int or (type(value) is float and math.isfinite(value)))
        and type(stamp) is str
    ):
        return None
    ts = micros.get(stamp)
    if ts is None:
        try:
            ts = micros[stamp] = timestamp_micros(stamp)
        except ValidationError:
            return None
    return entity, feature, float(value), ts


def decode_json(raw: bytes | None) -> object:
    """The decoded JSON of one Kafka message, or a ValidationError (empty or malformed)."""
    if not raw:
        raise ValidationError("empty message")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"malformed JSON: {exc}") from None


def parse_message(raw: bytes | None) -> Columns:
    """Parse and validate one Kafka message; every event must be valid, or none is taken."""
    decoded = decode_json(raw)
    rows = decoded if isinstance(decoded, list) else [decoded]
    if not rows:
        raise ValidationError("empty list of events")
    columns = Columns()
    micros: dict[object, int] = {}
    for index, row in enumerate(rows):
        fast = _fast_row(row, micros)
        if fast is None:
            try:
                columns.append_row(row)
            except ValidationError as exc:
                raise ValidationError(f"event {index}: {exc}") from None
            continue
        columns.entity_id.append(fast[0])
        columns.feature_name.append(fast[1])
        columns.value.append(fast[2])
        columns.event_timestamp.append(fast[3])
    return columns
