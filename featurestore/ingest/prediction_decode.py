"""Prediction records decoded on the bridge's hot path (featurestore.ingest.predictions).

msgspec decodes and type-checks a record in C; whatever it refuses, and any value it cannot
vouch for, is left to the reference rules (predictions.PredictionRows.append_record), which
accept or refuse it with their reason. So this path changes no verdict and no error text,
only the cost of good records (README, Benchmarks).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from featurestore.errors import ValidationError
from featurestore.ingest.events import MAX_NAME_LENGTH, timestamp_micros

MAX_REQUEST_ID = 1024

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]


class _WireFeature(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: _Name
    # msgspec takes JSON integers here too, and refuses booleans and out-of-range numbers.
    value: float | None
    origin: Literal["online", "fallback", "request"]
    event_timestamp: str | None


class _WireOutput(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: _Name
    values: list[float | None]
    labels: list[str]


class _WireRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REQUEST_ID)]
    model_id: _Name
    model_version: _Name
    entity_id: _Name | None
    served_at: str
    source: Literal["predict", "infer"]
    features: list[_WireFeature]
    outputs: list[_WireOutput]


_DECODER = msgspec.json.Decoder(_WireRecord)


# Times as parsed, across records: the records of one call share their served_at, and
# features read together share their event time. Bounded by clearing it when full.
_MICROS: dict[str, int] = {}
_MICROS_MAX = 4096


def _micros(text: str) -> int:
    at = _MICROS.get(text)
    if at is None:
        if len(_MICROS) >= _MICROS_MAX:
            _MICROS.clear()
        at = _MICROS[text] = timestamp_micros(text)
    return at


def fast_row(raw: bytes | None) -> dict[str, Any] | None:
    """The prediction_log row of one message (times as microseconds), or None when only
    the reference rules can decide (malformed, a field missing, unknown or of another type,
    a null value not given with the request, a timestamp to refuse...)."""
    if not raw:
        return None
    try:
        # msgspec's JSON has no NaN or Infinity and refuses numbers past a float's range:
        # every number it gives is finite, as the reference rules want.
        row: dict[str, Any] = msgspec.to_builtins(_DECODER.decode(raw))
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return None
    try:
        for feature in row["features"]:
            if feature["value"] is None and feature["origin"] != "request":
                return None
            stamp = feature["event_timestamp"]
            if stamp is not None:
                feature["event_timestamp"] = _micros(stamp)
        row["served_at"] = _micros(row["served_at"])
    except ValidationError:
        return None
    return row
