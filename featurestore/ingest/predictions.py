"""Prediction records on the wire: the JSON of one served prediction (one Kafka message of
the predictions topic), its validation by the bridge, and the write batch of prediction_log.

A record is a JSON object with exactly these fields:

- request_id, model_id, model_version: non-empty strings (request_id at most 1024 chars)
- entity_id: the entity predicted for, or null (ModelInfer rows name no entity)
- served_at: ISO-8601 time the answer was computed (UTC; a time without offset is UTC)
- source: "predict" or "infer"
- features: [{name, value, origin ("online" | "fallback" | "request"), event_timestamp
  (ISO-8601 as served_at, null for request values)}] in the model's expected order; a
  request value may be null (a ModelInfer client's NaN)
- outputs: [{name, values: [number | null], labels: [string]}]

Both ends run in C on the good path: the publisher encodes a Record with msgspec, the bridge
decodes with msgspec into typed structs (prediction_decode); whatever that refuses goes to the
reference rules (PredictionRows.append_record), which accept or refuse it with their
reason, so the fast path changes no verdict and no error text, only the cost.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from featurestore.arrow_ipc import decode_table, encode_table
from featurestore.errors import ValidationError
from featurestore.ingest.events import MAX_NAME_LENGTH, decode_json, number, timestamp_micros
from featurestore.ingest.prediction_decode import MAX_REQUEST_ID, fast_row

FIELDS = frozenset(
    {
        "request_id",
        "model_id",
        "model_version",
        "entity_id",
        "served_at",
        "source",
        "features",
        "outputs",
    }
)
SOURCES = frozenset({"predict", "infer"})
ORIGINS = frozenset({"online", "fallback", "request"})

FEATURE_TYPE = pa.struct(
    [
        ("name", pa.string()),
        ("value", pa.float64()),
        ("origin", pa.string()),
        ("event_timestamp", pa.timestamp("us")),
    ]
)
OUTPUT_TYPE = pa.struct(
    [("name", pa.string()), ("values", pa.list_(pa.float64())), ("labels", pa.list_(pa.string()))]
)
BATCH_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("model_id", pa.string()),
        ("model_version", pa.string()),
        ("entity_id", pa.string()),
        ("served_at", pa.timestamp("us")),
        ("source", pa.string()),
        ("features", pa.list_(FEATURE_TYPE)),
        ("outputs", pa.list_(OUTPUT_TYPE)),
        ("offset", pa.int64()),
    ]
)
_COLUMNS = [name for name in BATCH_SCHEMA.names if name != "offset"]
# As sets once: pyarrow builds a new list of names at every access.
_FEATURE_KEYS = frozenset(FEATURE_TYPE.names)
_OUTPUT_KEYS = frozenset(OUTPUT_TYPE.names)


class Output(msgspec.Struct, gc=False):
    """One output of a record: numbers in values, or text in labels."""

    name: str
    values: list[Any]
    labels: list[str]


class Record(msgspec.Struct, gc=False):
    """One record as the publisher encodes it: the fields above; features are objects with
    FEATURE_TYPE's fields (the serving side's UsedFeature dataclasses, or dicts)."""

    request_id: str
    model_id: str
    model_version: str
    entity_id: str | None
    served_at: dt.datetime
    source: str
    features: list[Any]
    outputs: list[Output]


# msgspec writes a record of 10 features in 3.7 us where orjson took 6.5 us for the JSON
# alone (its dataclass path is slow) plus 1-2 us to build the dict (README, Benchmarks).
# It writes naive datetimes (UTC here) without an offset, which the bridge reads as UTC.
_ENCODER = msgspec.json.Encoder()


def encode_record(record: Record | dict[str, Any]) -> bytes:
    """One record's JSON (naive datetimes are UTC)."""
    return _ENCODER.encode(record)


def _text(value: object, key: str, limit: int = MAX_NAME_LENGTH) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{key} must be a non-empty string")
    if len(value) > limit:
        raise ValidationError(f"{key} is longer than {limit} characters")
    return value


def _number(value: object, key: str, *, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    return number(value, key)


def _feature(item: object, index: int, micros: dict[str, int]) -> dict[str, Any]:
    """One validated feature; `micros` caches the record's parsed event times."""
    where = f"features[{index}]"
    if not isinstance(item, dict) or item.keys() != _FEATURE_KEYS:
        raise ValidationError(f"{where} must be an object with {', '.join(FEATURE_TYPE.names)}")
    origin = item["origin"]
    if origin not in ORIGINS:
        raise ValidationError(f"{where}.origin must be one of {', '.join(sorted(ORIGINS))}")
    stamp = item["event_timestamp"]
    if stamp is not None:
        if not isinstance(stamp, str):  # unhashable ones too, before the cache lookup
            raise ValidationError(f"{where}.event_timestamp must be an ISO-8601 string or null")
        at = micros.get(stamp)
        if at is None:
            at = micros[stamp] = timestamp_micros(stamp)
        stamp = at
    return {
        "name": _text(item["name"], f"{where}.name"),
        # ModelInfer takes any float from its client: NaN travels as null.
        "value": _number(item["value"], f"{where}.value", nullable=origin == "request"),
        "origin": origin,
        "event_timestamp": stamp,
    }


def _output(item: object, index: int) -> dict[str, Any]:
    where = f"outputs[{index}]"
    if not isinstance(item, dict) or item.keys() != _OUTPUT_KEYS:
        raise ValidationError(f"{where} must be an object with name, values, labels")
    values, labels = item["values"], item["labels"]
    if not isinstance(values, list) or not isinstance(labels, list):
        raise ValidationError(f"{where}.values and .labels must be lists")
    if not all(isinstance(label, str) for label in labels):
        raise ValidationError(f"{where}.labels must be strings")
    return {
        "name": _text(item["name"], f"{where}.name"),
        # A model may answer NaN: JSON carries it as null, kept as NULL.
        "values": [_number(v, f"{where}.values", nullable=True) for v in values],
        "labels": labels,
    }


@dataclass
class PredictionRows:
    """Validated records as parallel columns, ready for Arrow (the bridge's batch rows)."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in _COLUMNS})

    def __len__(self) -> int:
        return len(self.columns["request_id"])

    def extend(self, other: PredictionRows) -> None:
        """Append every record of another PredictionRows."""
        for name, values in other.columns.items():
            self.columns[name].extend(values)

    def append_record(self, record: object) -> None:
        """Validate one record (a dict) and append it; on error nothing is appended."""
        if not isinstance(record, dict):
            raise ValidationError("a prediction record must be a JSON object")
        if set(record) != FIELDS:
            missing, extra = FIELDS - set(record), set(record) - FIELDS
            raise ValidationError(
                f"prediction record fields: missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        entity = record["entity_id"]
        if record["source"] not in SOURCES:
            raise ValidationError(f"source must be one of {', '.join(sorted(SOURCES))}")
        features, outputs = record["features"], record["outputs"]
        if not isinstance(features, list) or not isinstance(outputs, list):
            raise ValidationError("features and outputs must be lists")
        micros: dict[str, int] = {}
        row = {
            "request_id": _text(record["request_id"], "request_id", MAX_REQUEST_ID),
            "model_id": _text(record["model_id"], "model_id"),
            "model_version": _text(record["model_version"], "model_version"),
            "entity_id": None if entity is None else _text(entity, "entity_id"),
            "served_at": timestamp_micros(record["served_at"]),
            "source": record["source"],
            "features": [_feature(item, i, micros) for i, item in enumerate(features)],
            "outputs": [_output(item, i) for i, item in enumerate(outputs)],
        }
        for name, value in row.items():
            self.columns[name].append(value)

    def encode(self, offsets: list[int]) -> bytes:
        """The write batch (Arrow IPC) of these records, each with its message offset."""
        arrays = {
            name: pa.array(self.columns[name], BATCH_SCHEMA.field(name).type) for name in _COLUMNS
        }
        arrays["offset"] = pa.array(offsets, pa.int64())
        return encode_table(pa.table(arrays, schema=BATCH_SCHEMA), compression="lz4")


def parse_record(raw: bytes | None) -> PredictionRows:
    """Parse and validate one Kafka message of the predictions topic (one record)."""
    rows = PredictionRows()
    row = fast_row(raw)
    if row is None:
        rows.append_record(decode_json(raw))
    else:
        for name, value in row.items():
            rows.columns[name].append(value)
    return rows


def decode_batch(payload: bytes) -> tuple[pa.Table, pa.Array]:
    """A prediction write batch as (records, per-record Kafka offsets)."""
    table = decode_table(payload)
    if table.schema != BATCH_SCHEMA:
        raise ValueError(f"prediction batch has schema {table.schema}, expected {BATCH_SCHEMA}")
    offsets = table.column("offset").combine_chunks()
    return table.drop_columns(["offset"]), offsets


def records_by_offset(payload: bytes) -> dict[int, list[dict[str, object]]]:
    """A batch's records (the wire format's fields) by source offset, for dead letters."""
    table, offsets = decode_batch(payload)
    grouped: dict[int, list[dict[str, object]]] = {}
    for offset, row in zip(offsets.to_pylist(), table.to_pylist(), strict=True):
        grouped.setdefault(offset, []).append(row)
    return grouped
