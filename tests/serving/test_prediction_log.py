"""The prediction log's buffer and policy, and its records on the wire (no services): the
oldest calls dropped and counted when full, sampling, the per-model switch, and records that
the bridge's parser takes back exactly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from featurestore.errors import ValidationError
from featurestore.ingest.predictions import PredictionRows, decode_batch, parse_record
from featurestore.serving.predict import EntityPrediction, PredictionResult, UsedFeature
from featurestore.serving.prediction_log import (
    Inferred,
    Predicted,
    PredictionLog,
    encode,
    served_time,
)
from featurestore.serving.runtime import LoadedModel, load_model
from featurestore.settings import Settings
from tests.serving.onnx_models import linear_classifier, make_manifest

T1 = dt.datetime(2024, 5, 1, 10, 0, 0, 250)


def result(model_id: str = "m", entities: int = 1) -> PredictionResult:
    """A Predict answer of `entities` entities with one online and one request value."""
    return PredictionResult(
        model_id,
        "1.0",
        [
            EntityPrediction(
                f"e{i}",
                {"label": [1.0], "probabilities": [0.25, 0.75]},
                [
                    UsedFeature("a", 1.5 + i, T1, "online"),
                    UsedFeature("b", -2.0, None, "request"),
                ],
            )
            for i in range(entities)
        ],
    )


def dropped_full() -> float:
    value = REGISTRY.get_sample_value(
        "fstore_prediction_log_records_total", {"outcome": "dropped_full"}
    )
    return value or 0.0


def draws(values: list[float]) -> Iterator[float]:
    yield from values


def test_a_full_buffer_drops_its_oldest_calls_and_counts_their_records() -> None:
    log = PredictionLog(buffer_size=3)
    before = dropped_full()
    for i in range(5):  # calls of 1, 2, 3, 4, 5 entities
        log.log_predict(f"r{i}", result(entities=i + 1))
    kept = log.take(10)
    assert [e.request_id for e in kept] == ["r2", "r3", "r4"]
    assert log.dropped_records == 1 + 2
    assert dropped_full() - before == 3
    assert len(log) == 0 and log.take(10) == []


def test_take_returns_the_oldest_first_up_to_the_limit() -> None:
    log = PredictionLog(buffer_size=10)
    for i in range(4):
        log.log_predict(f"r{i}", result())
    assert [e.request_id for e in log.take(3)] == ["r0", "r1", "r2"]
    assert [e.request_id for e in log.take(3)] == ["r3"]
    assert log.dropped_records == 0


def test_sampling_logs_the_calls_whose_draw_is_under_the_rate() -> None:
    values = draws([0.1, 0.3, 0.2499, 0.25, 0.9])
    log = PredictionLog(sample_rate=0.25, draw=lambda: next(values))
    for i in range(5):
        log.log_predict(f"r{i}", result())
    assert [e.request_id for e in log.take(10)] == ["r0", "r2"]


@pytest.mark.parametrize(("rate", "logged"), [(0.0, 0), (1.0, 4)])
def test_sampling_at_the_bounds_logs_nothing_or_everything(rate: float, logged: int) -> None:
    def never() -> float:
        raise AssertionError("a rate of 0 or 1 draws nothing")

    log = PredictionLog(sample_rate=rate, draw=never if rate == 1.0 else lambda: 0.0)
    for i in range(4):
        log.log_predict(f"r{i}", result())
    assert len(log.take(10)) == logged


def test_only_the_models_named_are_logged_and_none_when_switched_off() -> None:
    log = PredictionLog(models=["credit"])
    log.log_predict("r1", result("credit"))
    log.log_predict("r2", result("fraud"))
    assert [e.request_id for e in log.take(10)] == ["r1"]
    off = PredictionLog(enabled=False)
    off.log_predict("r3", result("credit"))
    assert off.take(10) == []


def test_settings_switch_models_by_a_comma_separated_list() -> None:
    settings = Settings(prediction_log_models="credit, fraud", prediction_log_sample_rate=0.5)
    log = PredictionLog.from_settings(settings)
    assert log.models == frozenset({"credit", "fraud"})
    assert log.sample_rate == 0.5
    assert settings.to_env()["FSTORE_PREDICTION_LOG_MODELS"] == "credit,fraud"
    with pytest.raises(ValueError, match="less than or equal to 1"):
        Settings(prediction_log_sample_rate=1.5)


def test_predict_records_round_trip_through_the_bridges_parser() -> None:
    entry = Predicted("req-1", result(entities=2), 1_714_557_600.123456)
    messages = encode(entry)
    rows = PredictionRows()
    for message in messages:
        rows.extend(parse_record(message))
    table, offsets = decode_batch(rows.encode([7, 8]))
    assert offsets.to_pylist() == [7, 8]
    first = table.to_pylist()[0]
    assert first == {
        "request_id": "req-1",
        "model_id": "m",
        "model_version": "1.0",
        "entity_id": "e0",
        "served_at": dt.datetime(2024, 5, 1, 10, 0, 0, 123456),
        "source": "predict",
        "features": [
            {"name": "a", "value": 1.5, "origin": "online", "event_timestamp": T1},
            {"name": "b", "value": -2.0, "origin": "request", "event_timestamp": None},
        ],
        "outputs": [
            {"name": "label", "values": [1.0], "labels": []},
            {"name": "probabilities", "values": [0.25, 0.75], "labels": []},
        ],
    }
    assert table.column("entity_id").to_pylist() == ["e0", "e1"]
    assert served_time(entry.served_at) == first["served_at"]


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    artifacts = {"onnx": linear_classifier(2, [1.0, -1.0], 0.5)}
    manifest = make_manifest("oip", "2.0", artifacts, [("x", "float"), ("y", "float")])
    return load_model(manifest, artifacts, allow_pickle=False)


def test_infer_records_are_one_per_row_with_request_values(model: LoadedModel) -> None:
    rows = np.array([[1.0, 2.0], [3.5, -1.0]], dtype=np.float32)
    outputs = model.infer(rows)
    log = PredictionLog()
    log.log_infer("inf-1", model, rows, outputs)
    (entry,) = log.take(10)
    assert isinstance(entry, Inferred) and entry.size == 2
    parsed = PredictionRows()
    for message in encode(entry):
        parsed.extend(parse_record(message))
    table, _ = decode_batch(parsed.encode([0, 1]))
    records = table.to_pylist()
    assert [r["entity_id"] for r in records] == [None, None]
    assert [r["source"] for r in records] == ["infer", "infer"]
    assert records[1]["features"] == [
        {"name": "x", "value": 3.5, "origin": "request", "event_timestamp": None},
        {"name": "y", "value": -1.0, "origin": "request", "event_timestamp": None},
    ]
    by_name = {o["name"]: o["values"] for o in records[1]["outputs"]}
    assert by_name["label"] == [float(outputs["label"][1])]
    assert by_name["probabilities"] == pytest.approx(outputs["probabilities"][1].tolist())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"extra": 1}, "unknown \\['extra'\\]"),
        ({"source": "batch"}, "source must be one of"),
        ({"served_at": "yesterday"}, "not ISO-8601"),
        ({"request_id": ""}, "request_id must be a non-empty string"),
        (
            {"features": [{"name": "a", "value": 1.0, "origin": "cache", "event_timestamp": None}]},
            "features\\[0\\].origin must be one of",
        ),
        (
            {
                "features": [
                    {"name": "a", "value": True, "origin": "online", "event_timestamp": None}
                ]
            },
            "features\\[0\\].value must be a number",
        ),
        (
            {"features": [{"name": "a", "value": 1.0, "origin": "online", "event_timestamp": [1]}]},
            "features\\[0\\].event_timestamp must be an ISO-8601 string",
        ),
        (
            {"outputs": [{"name": "p", "values": ["x"], "labels": []}]},
            "outputs\\[0\\].values must be a number",
        ),
    ],
)
def test_the_bridge_refuses_a_bad_record_naming_what_is_wrong(
    change: dict[str, object], reason: str
) -> None:
    record = orjson.loads(encode(Predicted("r", result(), 1.0))[0])
    record.update(change)
    with pytest.raises(ValidationError, match=reason):
        parse_record(orjson.dumps(record))


def test_a_call_without_request_id_is_logged_under_a_generated_one() -> None:
    log = PredictionLog()
    log.log_predict("", result())
    log.log_predict("", result())
    first, second = log.take(10)
    assert len(first.request_id) == 32 and first.request_id != second.request_id
    assert parse_record(encode(first)[0]).columns["request_id"] == [first.request_id]


def test_a_modelinfer_nan_is_logged_as_null(model: LoadedModel) -> None:
    # The transports refuse NaN inputs, and infer refuses what is not finite once cast: the
    # log's own rule is checked with the outputs of a finite row.
    rows = np.array([[np.nan, 2.0]])
    log = PredictionLog()
    log.log_infer("nan", model, rows, model.infer(np.array([[1.0, 2.0]])))
    (entry,) = log.take(1)
    parsed = parse_record(encode(entry)[0])
    assert parsed.columns["features"][0][0]["value"] is None


def reference_rows(raw: bytes) -> dict[str, list[object]]:
    rows = PredictionRows()
    rows.append_record(orjson.loads(raw))
    return rows.columns


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"served_at": "2024-05-01T12:00:00.5+02:00", "entity_id": None, "source": "infer"},
        {
            "features": [
                {"name": "a", "value": 3, "origin": "fallback", "event_timestamp": "2024-05-01"},
                {"name": "b", "value": None, "origin": "request", "event_timestamp": None},
                {"name": "c", "value": 1e308, "origin": "online", "event_timestamp": "2024-05-01"},
            ],
            "outputs": [{"name": "label", "values": [], "labels": ["yes", "no"]}],
        },
    ],
)
def test_the_bridges_fast_parser_gives_the_rows_of_the_reference_rules(
    change: dict[str, object],
) -> None:
    record = orjson.loads(encode(Predicted("r", result(), 1.0))[0])
    record.update(change)
    raw = orjson.dumps(record)
    assert parse_record(raw).columns == reference_rows(raw)


@pytest.mark.parametrize(
    ("feature", "reason"),
    [
        ({"name": "a", "value": None, "origin": "online", "event_timestamp": None}, "must be a"),
        (
            {"name": "a", "value": None, "origin": "fallback", "event_timestamp": "2024-05-01"},
            "must be a",
        ),
        ({"name": "a", "value": 1e308, "origin": "online", "event_timestamp": "x"}, "ISO-8601"),
        (
            {
                "name": "a",
                "value": 1.0,
                "origin": "online",
                "event_timestamp": "0001-01-01T00:00+01:00",
            },
            "outside years 1-9999",
        ),
    ],
)
def test_what_the_fast_parser_cannot_vouch_for_gets_the_reference_verdict(
    feature: dict[str, object], reason: str
) -> None:
    record = orjson.loads(encode(Predicted("r", result(), 1.0))[0])
    record["features"] = [feature]
    with pytest.raises(ValidationError, match=reason):
        parse_record(orjson.dumps(record))


def test_a_number_past_a_floats_range_gets_the_reference_verdict() -> None:
    record = orjson.loads(encode(Predicted("r", result(), 1.0))[0])
    record["outputs"] = [{"name": "p", "values": [0.5], "labels": []}]
    raw = orjson.dumps(record).replace(b"0.5", b"1e999")
    with pytest.raises(ValidationError, match="number is infinity"):
        parse_record(raw)
