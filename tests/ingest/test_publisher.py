"""Pushed events -> the producer's messages, packed under the row and byte limits (the
per-row rejections are tested over gRPC, tests/grpc_server/test_push.py)."""

from __future__ import annotations

from featurestore.ingest.events import parse_message, timestamp_micros
from featurestore.ingest.publisher import ROWS_PER_MESSAGE, to_messages, validate_events


def row(entity: str = "e", **changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "entity_id": entity,
        "feature_name": "f",
        "value": 1.5,
        "event_timestamp": "2024-01-02T03:04:05.123456Z",
    }
    base.update(changes)
    return base


def test_messages_round_trip_through_the_bridges_parser() -> None:
    rows = [row(f"e{i}", value=float(i)) for i in range(ROWS_PER_MESSAGE * 2 + 1)]
    rows.append(row("old", event_timestamp="0999-12-31T23:59:59Z"))
    messages = to_messages(validate_events(rows), max_message_bytes=900_000)
    assert [m.rows for m in messages] == [ROWS_PER_MESSAGE, ROWS_PER_MESSAGE, 2]
    parsed = [parse_message(m.payload) for m in messages]
    assert [e for c in parsed for e in c.entity_id] == [r["entity_id"] for r in rows]
    assert [v for c in parsed for v in c.value] == [r["value"] for r in rows]
    # A year before 1000 keeps its four digits (strftime's %Y would drop them).
    assert parsed[-1].event_timestamp[-1] == timestamp_micros("0999-12-31T23:59:59")


def test_messages_stay_under_the_byte_limit() -> None:
    rows = [row("x" * 200, value=float(i)) for i in range(40)]
    messages = to_messages(validate_events(rows), max_message_bytes=2_000)
    assert all(len(m.payload) <= 2_000 for m in messages)
    assert sum(m.rows for m in messages) == 40 and len(messages) > 1
