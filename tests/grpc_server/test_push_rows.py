"""PushFeatures' events with a Timestamp no event may carry: the reason says what was sent
(no services: the conversion and the producer's check)."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from featurestore.errors import ValidationError
from featurestore.ingest.publisher import validate_events
from grpc_server import convert
from grpc_server.generated import featurestore_pb2 as pb


@pytest.mark.parametrize(
    ("stamp", "said"),
    [
        (Timestamp(seconds=253402300800), "253402300800 s after 1970 (outside years 1-9999)"),
        (Timestamp(seconds=-62135596801), "-62135596801 s after 1970 (outside years 1-9999)"),
        (Timestamp(seconds=1, nanos=-5), "1 s and -5 ns after 1970 (nanos must be 0-999999999)"),
    ],
)
def test_a_timestamp_out_of_range_is_named_as_sent(stamp: Timestamp, said: str) -> None:
    # It read "event_timestamp '253402300800s' is not ISO-8601", and '1s' for bad nanos.
    event = pb.FeatureEvent(entity_id="e", feature_name="f", value=1.0, event_timestamp=stamp)
    with pytest.raises(ValidationError) as caught:
        validate_events(convert.push_rows(pb.PushFeaturesRequest(events=[event])))
    assert str(caught.value) == (
        f"1 of 1 events rejected, none sent: event 0: event_timestamp '{said}' is not ISO-8601"
    )
