"""The bridge's decoders (no services): msgspec's JSON path gives the reference verdicts,
and the Arrow content type is checked with the same rules."""

from __future__ import annotations

import datetime as dt
import json
import math

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.arrow_ipc import encode_table
from featurestore.errors import ValidationError
from featurestore.ingest.event_decode import (
    ARROW_CONTENT_TYPE,
    ARROW_SCHEMA,
    JSON_CONTENT_TYPE,
    FeatureRows,
    columns_table,
    encode_arrow,
    parse_arrow,
    parse_features,
    parse_json,
)
from featurestore.ingest.events import Columns, parse_message

GOOD = {
    "entity_id": "cust_1",
    "feature_name": "debt_to_income_ratio",
    "value": 0.31,
    "event_timestamp": "2024-05-01T10:00:00",
}

names = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "a\x01", "b\x85", "c\u00a0", "d\u2028", "x" * 256, "y" * 257, "é"]),
    st.integers(),
    st.none(),
)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
stamps = st.one_of(
    st.sampled_from(
        [
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00Z",
            "2024-05-01T12:00:00+02:00",
            "2024-05-01 10:00:00.123456",
            "2024-05-01",
            "yesterday",
            "",
        ]
    ),
    st.integers(),
)
events = st.fixed_dictionaries(
    {"entity_id": names, "feature_name": names, "value": values, "event_timestamp": stamps},
    optional={"extra": st.integers()},
)


def verdict(parse: object, raw: bytes) -> Columns | str:
    try:
        return parse(raw)  # type: ignore[operator, no-any-return]
    except ValidationError as exc:
        return f"refused: {exc}"


@settings(max_examples=400, deadline=None)
@given(st.one_of(events, st.lists(st.one_of(events, st.just(GOOD)), max_size=4)), st.booleans())
def test_msgspec_path_gives_the_reference_verdict(message: object, ascii_only: bool) -> None:
    # The standard library's encoder: integers past 64 bits, and \u escapes when ascii_only.
    raw = json.dumps(message, ensure_ascii=ascii_only).encode()
    assert verdict(parse_json, raw) == verdict(parse_message, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"[]",
        b"[1]",
        b'{"entity_id":"a","feature_name":"f","value":NaN,"event_timestamp":"2024-01-01"}',
        b'{"entity_id":"a","feature_name":"f","value":1e999,"event_timestamp":"2024-01-01"}',
        b'{"entity_id":"\xff","feature_name":"f","value":1,"event_timestamp":"2024-01-01"}',
        b'{"entity_id":"a\\u0007","feature_name":"f","value":1,"event_timestamp":"2024-01-01"}',
        b'{"entity_id":"a","entity_id":"b","feature_name":"f","value":1,"event_timestamp":"2024"}',
    ],
)
def test_msgspec_path_on_odd_bytes(raw: bytes) -> None:
    assert verdict(parse_json, raw) == verdict(parse_message, raw)


def arrow_events(**columns: pa.Array) -> pa.Table:
    base = {
        "entity_id": pa.array(["a", "b"]),
        "feature_name": pa.array(["f", "g"]),
        "value": pa.array([1.0, 2.5]),
        "event_timestamp": pa.array([dt.datetime(2024, 5, 1, 10), dt.datetime(2024, 5, 1)]),
    }
    base.update(columns)
    return pa.table(base)


def test_an_arrow_message_gives_the_same_rows_as_its_json() -> None:
    json_rows = parse_message(
        orjson.dumps(
            [
                {**GOOD, "entity_id": "a", "feature_name": "f", "value": 1.0},
                {
                    **GOOD,
                    "entity_id": "b",
                    "feature_name": "g",
                    "value": 2.5,
                    "event_timestamp": "2024-05-01T02:00:00+02:00",
                },
            ]
        )
    )
    table = parse_features(encode_arrow(arrow_events()), ARROW_CONTENT_TYPE)
    assert isinstance(table, pa.Table)
    assert table.equals(columns_table(json_rows))
    assert table.schema == ARROW_SCHEMA


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        (arrow_events().drop_columns(["value"]), "columns must be entity_id, .* got"),
        (arrow_events(value=pa.array([1, 2])), "value must be of Arrow type double, got int64"),
        (arrow_events(value=pa.array([1.0, None])), "value must not be null"),
        (arrow_events(value=pa.array([1.0, math.inf])), "value must be finite"),
        (arrow_events(value=pa.array([1.0, math.nan])), "value must be finite"),
        (arrow_events(entity_id=pa.array(["a", ""])), "entity_id must be a non-empty string"),
        (arrow_events(entity_id=pa.array(["a", None])), "entity_id must not be null"),
        (arrow_events(feature_name=pa.array(["f", "x" * 257])), "feature_name is longer than"),
        (arrow_events(feature_name=pa.array(["f", "g\x9f"])), "feature_name contains control"),
        (
            arrow_events(event_timestamp=pa.array(["2024-05-01", "2024-05-02"])),
            "event_timestamp must be of Arrow type timestamp",
        ),
        (arrow_events().slice(0, 0), "empty list of events"),
    ],
)
def test_bad_arrow_messages_are_refused_with_a_reason(table: pa.Table, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_arrow(encode_table(table))


@pytest.mark.parametrize(
    ("raw", "content_type", "reason"),
    [
        (b"", ARROW_CONTENT_TYPE, "empty message"),
        (b"not arrow", ARROW_CONTENT_TYPE, "malformed Arrow IPC stream"),
        (orjson.dumps(GOOD), ARROW_CONTENT_TYPE, "malformed Arrow IPC stream"),
        (orjson.dumps(GOOD), "text/csv", "content-type 'text/csv' is not accepted"),
    ],
)
def test_content_types(raw: bytes, content_type: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_features(raw, content_type)


def test_json_is_the_default_content_type() -> None:
    assert parse_features(orjson.dumps(GOOD), None) == parse_message(orjson.dumps(GOOD))
    assert parse_features(orjson.dumps(GOOD), JSON_CONTENT_TYPE) == parse_message(
        orjson.dumps(GOOD)
    )


def test_feature_rows_keep_message_order_across_content_types() -> None:
    rows = FeatureRows()
    first = parse_message(orjson.dumps({**GOOD, "entity_id": "first"}))
    rows.extend(first)
    rows.extend(parse_arrow(encode_arrow(arrow_events())))
    rows.extend(parse_message(orjson.dumps({**GOOD, "entity_id": "last"})))
    assert len(rows) == 4
    assert rows.table().column("entity_id").to_pylist() == ["first", "a", "b", "last"]
    assert FeatureRows().table().num_rows == 0
