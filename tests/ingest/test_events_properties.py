"""Properties of the event parser (Hypothesis, no services): no bytes and no JSON make
parse_message raise anything but ValidationError; it accepts exactly what the documented
rules accept (checked against a reference written here from the module's docstring), its
fast path agrees with the precise one, and accepted events round-trip through the
producer's messages unchanged."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.errors import ValidationError
from featurestore.ingest.events import Columns, parse_message
from featurestore.ingest.publisher import to_messages

PROPERTIES = settings(
    max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
FIELDS = ("entity_id", "feature_name", "value", "event_timestamp")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
GOOD = {"entity_id": "e", "feature_name": "f", "value": 1.5, "event_timestamp": "2024-05-01"}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
offsets = st.sampled_from(["", "Z", "+00:00", "+05:30", "-23:59", "+23:59"])
iso = st.builds(
    lambda t, o: t.isoformat() + o,
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    offsets,
)
# The range's ends, where an offset carries the time out of it.
ends = st.builds(
    lambda t, o: t.isoformat() + o,
    st.sampled_from([dt.datetime(1, 1, 1, 0, 30), dt.datetime.max]),
    offsets,
)
hostile_names = (
    st.text(max_size=3)
    | st.sampled_from(["a\x00b", "\x7f", "\x9f", "\xa0", "\u2028", "é", "x" * 256, "x" * 257])
    | json_scalars
)
valid_names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=12
)
numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1)
good = st.fixed_dictionaries(
    {
        "entity_id": valid_names,
        "feature_name": valid_names,
        "value": numbers,
        "event_timestamp": iso | ends,
    }
)
# Events that follow the rules but perhaps for one field, and events of any fields.
events = (
    good
    | st.builds(
        lambda row, key, bad: {**row, key: bad},
        good,
        st.sampled_from([*FIELDS, "extra"]),
        hostile_names | json_scalars | st.text(max_size=30),
    )
    | st.dictionaries(
        st.sampled_from([*FIELDS, "extra"]),
        valid_names | hostile_names | numbers | iso,
        min_size=3,
        max_size=5,
    )
)


def reference_row(row: Any) -> tuple[str, str, float, int] | None:
    """The event per the module's documented rules, or None when they refuse it."""
    if not isinstance(row, dict) or set(row) != set(FIELDS):
        return None
    for key in ("entity_id", "feature_name"):
        name = row[key]
        if not isinstance(name, str) or not 0 < len(name) <= 256:
            return None
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
            return None
    value = row["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(float(value)):
        return None
    try:
        stamp = dt.datetime.fromisoformat(row["event_timestamp"])
    except (TypeError, ValueError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    try:
        stamp.astimezone(dt.UTC)
    except OverflowError:  # outside years 1-9999 in UTC
        return None
    micros = (stamp - EPOCH) // dt.timedelta(microseconds=1)
    return row["entity_id"], row["feature_name"], float(value), micros


def rows_of(columns: Columns) -> list[tuple[str, str, float, int]]:
    return list(
        zip(
            columns.entity_id,
            columns.feature_name,
            columns.value,
            columns.event_timestamp,
            strict=True,
        )
    )


def parsed_or_error(raw: bytes | None) -> list[tuple[str, str, float, int]] | ValidationError:
    try:
        return rows_of(parse_message(raw))
    except ValidationError as exc:
        assert str(exc)  # the error says what was wrong
        return exc


@PROPERTIES
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_parser(raw: bytes) -> None:
    parsed_or_error(raw)


@PROPERTIES
@given(json_values)
def test_arbitrary_json_never_crashes_the_parser(value: object) -> None:
    result = parsed_or_error(orjson.dumps(value))
    expected = [reference_row(row) for row in (value if isinstance(value, list) else [value])]
    if not expected or None in expected:
        assert isinstance(result, ValidationError)
    else:
        assert result == expected


@PROPERTIES
@given(st.lists(events, min_size=1, max_size=4), st.booleans())
def test_events_are_accepted_exactly_by_the_documented_rules(
    rows: list[dict[str, Any]], as_list: bool
) -> None:
    message = orjson.dumps(rows if as_list or len(rows) > 1 else rows[0])
    expected = [reference_row(row) for row in rows]
    result = parsed_or_error(message)
    if None in expected:
        assert isinstance(result, ValidationError)
        first_bad = expected.index(None)
        assert str(result).startswith(f"event {first_bad}: ")
    else:
        assert result == expected
    # The precise path alone (no fast path) decides each row the same way.
    for row, reference in zip(rows, expected, strict=True):
        columns = Columns()
        try:
            columns.append_row(row)
        except ValidationError:
            assert reference is None
        else:
            assert rows_of(columns) == [reference]


@PROPERTIES
@given(st.lists(events, min_size=1, max_size=30), st.integers(min_value=200, max_value=5000))
def test_accepted_events_round_trip_through_the_producers_messages(
    rows: list[dict[str, Any]], max_message_bytes: int
) -> None:
    accepted = [row for row in rows if reference_row(row) is not None]
    if not accepted:
        return
    columns = parse_message(orjson.dumps(accepted))
    again = [rows_of(parse_message(m.payload)) for m in to_messages(columns, max_message_bytes)]
    assert [row for message in again for row in message] == rows_of(columns)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (orjson.dumps({**GOOD, "entity_id": "a\x00b"}), "event 0: entity_id contains control"),
        (orjson.dumps({**GOOD, "entity_id": "\x00"}), "event 0: entity_id contains control"),
        (orjson.dumps(GOOD).replace(b'"e"', b'"e\xff"'), "malformed JSON"),
        (orjson.dumps(GOOD).replace(b'"e"', b'"\xc3"'), "malformed JSON"),
        (orjson.dumps(GOOD).replace(b'"e"', b'"\\ud800"'), "malformed JSON"),
        (
            orjson.dumps({**GOOD, "event_timestamp": "0001-01-01T00:00:00+01:00"}),
            "outside years 1-9999 in UTC",
        ),
        (
            orjson.dumps({**GOOD, "event_timestamp": "9999-12-31T23:59:59-00:01"}),
            "outside years 1-9999 in UTC",
        ),
    ],
    ids=[
        "nul-inside",
        "nul-only",
        "invalid-utf8",
        "truncated-utf8",
        "lone-surrogate",
        "y0",
        "y10k",
    ],
)
def test_hostile_entity_ids_and_times_are_refused_by_name(raw: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_message(raw)
