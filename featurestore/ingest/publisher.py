"""Feature events pushed by a client: validated with the producer's rules, then handed as the
producer's JSON messages to an EventPublisher (the transport is injected: bridge.publisher
implements it on Kafka).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Protocol

import orjson

from featurestore.errors import ValidationError
from featurestore.ingest.events import Columns
from featurestore.ingest.sources import Message

# At most this many events per message, as the file producer's default.
ROWS_PER_MESSAGE = 500
# Reasons named in one error, by count and by length: a gRPC status text travels in HTTP/2
# trailers, which clients refuse past 8 KiB by default, and grpc_server cuts it at 1024
# characters; within this budget the closing "and N more" still reaches the client.
MAX_REASONS = 50
MAX_REASONS_CHARS = 800  # every reason is short (event texts quote at most 64 characters)
_EPOCH = dt.datetime(1970, 1, 1)


class EventPublisher(Protocol):
    """Sends messages to the features topic and waits until the broker has them."""

    def publish(self, messages: Sequence[Message], *, timeout_s: float) -> int:
        """Send every message and wait for each delivery; the number of events delivered.
        Raises ServiceError when any message is not confirmed within timeout_s (it may
        still arrive later: a client retrying then can send its events twice)."""
        ...


def validate_events(rows: Sequence[Mapping[str, object]]) -> Columns:
    """Every row validated as the producer validates an event; a ValidationError naming
    each bad row's index and reason when any is bad (then nothing is taken)."""
    if not rows:
        raise ValidationError("no events given")
    columns = Columns()
    reasons: list[str] = []
    budget = MAX_REASONS_CHARS
    bad = 0
    for index, row in enumerate(rows):
        try:
            columns.append_row(dict(row))
        except ValidationError as exc:
            bad += 1
            reason = f"event {index}: {exc}"
            if len(reasons) < MAX_REASONS and len(reason) <= budget:
                reasons.append(reason)
                budget -= len(reason) + 2
            else:
                # The named reasons stay a prefix: a later, shorter one is not named.
                budget = -1
    if bad:
        more = f"; and {bad - len(reasons)} more" if bad > len(reasons) else ""
        raise ValidationError(
            f"{bad} of {len(rows)} events rejected, none sent: {'; '.join(reasons)}{more}"
        )
    return columns


def _timestamp_text(micros: int) -> str:
    # isoformat pads the year to four digits (strftime's %Y does not, before year 1000).
    return (_EPOCH + dt.timedelta(microseconds=micros)).isoformat(timespec="microseconds") + "Z"


def to_messages(columns: Columns, max_message_bytes: int) -> list[Message]:
    """Validated events as the producer's messages (JSON arrays of events), each of at most
    ROWS_PER_MESSAGE events and max_message_bytes bytes."""
    messages: list[Message] = []
    batch: list[bytes] = []
    size = 2
    for entity, feature, value, micros in zip(
        columns.entity_id,
        columns.feature_name,
        columns.value,
        columns.event_timestamp,
        strict=True,
    ):
        event = orjson.dumps(
            {
                "entity_id": entity,
                "feature_name": feature,
                "value": value,
                "event_timestamp": _timestamp_text(micros),
            }
        )
        if batch and (len(batch) >= ROWS_PER_MESSAGE or size + len(event) + 1 > max_message_bytes):
            messages.append(Message(b"[" + b",".join(batch) + b"]", len(batch)))
            batch, size = [], 2
        batch.append(event)
        size += len(event) + 1
    if batch:
        messages.append(Message(b"[" + b",".join(batch) + b"]", len(batch)))
    return messages


def push_events(
    publisher: EventPublisher,
    rows: Sequence[Mapping[str, object]],
    *,
    max_message_bytes: int,
    timeout_s: float,
) -> int:
    """Validate every row, then publish all of them; the number of events delivered."""
    columns = validate_events(rows)
    return publisher.publish(to_messages(columns, max_message_bytes), timeout_s=timeout_s)
