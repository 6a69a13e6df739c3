"""Message parsing and validation rules (no services)."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from featurestore.errors import ValidationError
from featurestore.ingest.events import parse_message, timestamp_micros

GOOD = {
    "entity_id": "cust_1",
    "feature_name": "debt_to_income_ratio",
    "value": 0.31,
    "event_timestamp": "2024-05-01T10:00:00",
}


def micros(value: dt.datetime) -> int:
    return int((value - dt.datetime(1970, 1, 1)) / dt.timedelta(microseconds=1))


def test_one_event_and_a_list_of_events() -> None:
    one = parse_message(orjson.dumps(GOOD))
    many = parse_message(orjson.dumps([GOOD, {**GOOD, "entity_id": "cust_2", "value": 7}]))
    assert one.entity_id == ["cust_1"]
    assert many.entity_id == ["cust_1", "cust_2"]
    assert many.value == [0.31, 7.0]
    assert many.event_timestamp == [micros(dt.datetime(2024, 5, 1, 10))] * 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", dt.datetime(2024, 5, 1, 10)),
        ("2024-05-01T12:00:00+02:00", dt.datetime(2024, 5, 1, 10)),
        ("2024-05-01T05:30:00-04:30", dt.datetime(2024, 5, 1, 10)),
        ("2024-05-01 10:00:00.123456", dt.datetime(2024, 5, 1, 10, 0, 0, 123456)),
        ("2024-05-01", dt.datetime(2024, 5, 1)),
    ],
)
def test_time_zones_are_converted_to_utc(text: str, expected: dt.datetime) -> None:
    assert timestamp_micros(text) == micros(expected)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty message"),
        (b"{not json", "malformed JSON"),
        (b"[]", "empty list of events"),
        (b"[1]", "event 0: event must be a JSON object, got int"),
        (orjson.dumps({**GOOD, "extra": 1}), "unknown field"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "value"}), "missing field.*value"),
        (orjson.dumps({**GOOD, "entity_id": 17}), "entity_id must be a non-empty string, got int"),
        (orjson.dumps({**GOOD, "entity_id": ""}), "entity_id must be a non-empty string"),
        (orjson.dumps({**GOOD, "feature_name": None}), "feature_name must be .* got null"),
        (orjson.dumps({**GOOD, "feature_name": "a\x01b"}), "control characters"),
        (orjson.dumps({**GOOD, "entity_id": "x" * 257}), "longer than 256"),
        (orjson.dumps({**GOOD, "value": "0.3"}), "value must be a number, got str"),
        (orjson.dumps({**GOOD, "value": True}), "value must be a number, got bool"),
        (orjson.dumps({**GOOD, "value": None}), "value must be a number, got null"),
        (
            b'{"entity_id":"a","feature_name":"f","value":NaN,"event_timestamp":"2024-01-01"}',
            "malformed JSON",
        ),
        (
            b'{"entity_id":"a","feature_name":"f","value":1e999,"event_timestamp":"2024-01-01"}',
            "malformed JSON",
        ),
        (orjson.dumps({**GOOD, "event_timestamp": "yesterday"}), "'yesterday' is not ISO-8601"),
        (orjson.dumps({**GOOD, "event_timestamp": 1714557600}), "must be an ISO-8601 string"),
        (orjson.dumps([GOOD, {**GOOD, "value": "x"}]), "^event 1: value must be a number"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_message(payload)


def test_one_bad_event_refuses_the_whole_message() -> None:
    with pytest.raises(ValidationError):
        parse_message(orjson.dumps([GOOD, GOOD, {**GOOD, "value": "bad"}]))
