"""Predict against real Redis (online store) and a real DuckDB store (the fallback), and the
ModelCache picking up versions from Redis."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import redis
from prometheus_client import REGISTRY

from featurestore.errors import (
    LimitError,
    MissingFeaturesError,
    ModelNotFoundError,
    UnusableFeaturesError,
    ValidationError,
)
from featurestore.services import ManagedService
from featurestore.serving import manifest
from featurestore.serving.predict import Predictor, UsedFeature
from featurestore.serving.runtime import ModelCache
from featurestore.settings import Settings
from featurestore.store import merger
from featurestore.store.database import OffsetSpan, Store
from featurestore.store.local_reader import LocalReader
from featurestore.store.online import OnlineStore, from_micros, parse_stored
from tests.helpers import wait_until
from tests.serving import onnx_models as om

FEATURES = [("debt_to_income_ratio", "float"), ("age_years", "int"), ("has_default", "bool")]
NAMES = [name for name, _ in FEATURES]
TYPES = [kind for _, kind in FEATURES]
WEIGHTS = [1.5, -0.04, 0.8]
MEAN, SCALE = [0.3, 40.0, 0.5], [0.2, 12.0, 0.5]
T0 = dt.datetime(2024, 5, 1, 12, 0, 0, 250)


class CountingConnection(redis.Connection):
    """A real connection that counts what it sends: one send is one round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


@pytest.fixture
def client(settings: Settings, redis_service: ManagedService) -> Iterator[redis.Redis]:
    """A client whose round trips are counted."""
    pool = redis.ConnectionPool.from_url(settings.redis_url, connection_class=CountingConnection)
    with redis.Redis(connection_pool=pool) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A DuckDB store of this process, read by the fallback through a LocalReader."""
    s = Store(tmp_path / "features.duckdb")
    yield s
    s.close()


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _serve(client: redis.Redis, model_id: str, version: str = "1.0.0", bias: float = -0.2) -> None:
    artifacts = {
        "onnx": om.linear_classifier(3, WEIGHTS, bias),
        "json": om.scaler_json(MEAN, SCALE),
    }
    om.publish_model(client, model_id, version, artifacts, FEATURES)


def _online(client: redis.Redis, values: dict[str, dict[str, float]], at: dt.datetime = T0) -> None:
    """Write through the online store's own update path."""
    micros = int((at - dt.datetime(1970, 1, 1)) / dt.timedelta(microseconds=1))
    updates = [
        "".join(f"{n}\x1f{micros}\x1f{v!r}\x1f0\x1e" for n, v in f.items()) for f in values.values()
    ]
    OnlineStore(client).apply_updates(pa.table({"entity_id": list(values), "updates": updates}))


def _duckdb(store: Store, values: dict[str, dict[str, float]], at: dt.datetime) -> None:
    rows = [(e, n, v) for e, features in values.items() for n, v in features.items()]
    table = pa.table(
        {
            "entity_id": [r[0] for r in rows],
            "feature_name": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "event_timestamp": pa.array([at] * len(rows), pa.timestamp("us")),
        }
    )
    offsets = pa.array(range(len(rows)), pa.int64())
    store.write_batch(table, offsets, OffsetSpan(_id("t"), 0, 0, len(rows) - 1))
    merger.merge(store.cursor())


def _predictor(
    client: redis.Redis, reader: LocalReader | None = None, max_entities: int = 1000
) -> Predictor:
    models = ModelCache(client, allow_pickle=False)
    models.refresh()
    return Predictor(client, models, reader, max_entities=max_entities, fallback_timeout_s=5)


def _probabilities(outputs: dict[str, list[float] | list[str]]) -> np.ndarray:
    return np.asarray(outputs["probabilities"], dtype=np.float64)


def _reference(rows: list[list[float]], bias: float = -0.2) -> dict[str, np.ndarray]:
    return om.expected_classifier(
        np.array(rows), WEIGHTS, bias, types=TYPES, mean=MEAN, scale=SCALE
    )


def test_online_values_in_one_round_trip_equal_the_reference(client: redis.Redis) -> None:
    model_id, entity = _id("m"), _id("e")
    _serve(client, model_id)
    _online(client, {entity: {"debt_to_income_ratio": 0.61, "age_years": 33.4, "has_default": 1}})
    predictor = _predictor(client)
    before = CountingConnection.sends
    result = predictor.predict(model_id, [entity])
    assert CountingConnection.sends - before == 1
    assert (result.model_id, result.version) == (model_id, "1.0.0")
    [prediction] = result.predictions
    assert prediction.features == [
        UsedFeature("debt_to_income_ratio", 0.61, T0, "online"),
        UsedFeature("age_years", 33.4, T0, "online"),
        UsedFeature("has_default", 1.0, T0, "online"),
    ]
    want = _reference([[0.61, 33.4, 1.0]])
    assert prediction.outputs["label"] == [float(want["label"][0])]
    np.testing.assert_allclose(
        _probabilities(prediction.outputs), want["probabilities"][0], rtol=1e-5, atol=1e-6
    )


def test_hundred_entities_in_one_call_equal_the_reference(client: redis.Redis) -> None:
    model_id = _id("m")
    _serve(client, model_id)
    rng = np.random.default_rng(7)
    rows = np.column_stack(
        [rng.uniform(0, 1, 100), rng.integers(18, 80, 100), rng.integers(0, 2, 100)]
    ).tolist()
    entities = [_id("e") for _ in rows]
    _online(
        client,
        {e: dict(zip(NAMES, row, strict=True)) for e, row in zip(entities, rows, strict=True)},
    )
    predictor = _predictor(client)
    before = CountingConnection.sends
    result = predictor.predict(model_id, entities)
    assert CountingConnection.sends - before == 1
    assert [p.entity_id for p in result.predictions] == entities
    want = _reference(rows)
    assert [p.outputs["label"][0] for p in result.predictions] == want["label"].tolist()
    got = np.array([p.outputs["probabilities"] for p in result.predictions])
    np.testing.assert_allclose(got, want["probabilities"], rtol=1e-5, atol=1e-6)
    assert 0 < sum(want["label"]) < 100


def test_fallback_fills_what_redis_lacks(client: redis.Redis, store: Store) -> None:
    model_id, absent, partial = _id("m"), _id("absent"), _id("partial")
    _serve(client, model_id)
    later = T0 + dt.timedelta(hours=1)
    _online(client, {partial: {"debt_to_income_ratio": 0.2}})
    _duckdb(
        store, {absent: {"debt_to_income_ratio": 0.9, "age_years": 51, "has_default": 0}}, later
    )
    _duckdb(
        store, {partial: {"debt_to_income_ratio": 0.7, "age_years": 28, "has_default": 1}}, later
    )
    result = _predictor(client, LocalReader(store)).predict(model_id, [absent, partial])
    first, second = result.predictions
    assert [(f.value, f.event_timestamp, f.origin) for f in first.features] == [
        (0.9, later, "fallback"),
        (51.0, later, "fallback"),
        (0.0, later, "fallback"),
    ]
    # The online value is kept even though DuckDB holds another; only the gaps are filled.
    assert [(f.value, f.origin) for f in second.features] == [
        (0.2, "online"),
        (28.0, "fallback"),
        (1.0, "fallback"),
    ]
    want = _reference([[0.9, 51, 0], [0.2, 28, 1]])
    got = np.array([p.outputs["probabilities"] for p in result.predictions])
    np.testing.assert_allclose(got, want["probabilities"], rtol=1e-5, atol=1e-6)


def test_fallback_reads_of_many_entities_each_fill_their_own_entity(
    client: redis.Redis, store: Store
) -> None:
    # More entities than the fallback's threads: every read's answer must land on its own
    # entity, in request order, whatever order the side-by-side reads finish in.
    model_id = _id("m")
    _serve(client, model_id)
    entities = [_id("absent") for _ in range(40)]
    values = {
        e: {"debt_to_income_ratio": i / 40, "age_years": 20 + i, "has_default": i % 2}
        for i, e in enumerate(entities)
    }
    _duckdb(store, values, T0)
    result = _predictor(client, LocalReader(store)).predict(model_id, entities)
    assert [p.entity_id for p in result.predictions] == entities
    for prediction, entity in zip(result.predictions, entities, strict=True):
        assert [(f.value, f.origin) for f in prediction.features] == [
            (float(values[entity][n]), "fallback") for n in NAMES
        ]
    want = _reference([[values[e][n] for n in NAMES] for e in entities])
    got = np.array([p.outputs["probabilities"] for p in result.predictions])
    np.testing.assert_allclose(got, want["probabilities"], rtol=1e-5, atol=1e-6)


def test_request_values_override_and_fill_in(client: redis.Redis) -> None:
    model_id, entity = _id("m"), _id("e")
    _serve(client, model_id)
    _online(client, {entity: {"debt_to_income_ratio": 0.61, "age_years": 33}})
    overrides = {entity: {"debt_to_income_ratio": 0.05, "has_default": 1.0}}
    [prediction] = _predictor(client).predict(model_id, [entity], overrides).predictions
    assert prediction.features == [
        UsedFeature("debt_to_income_ratio", 0.05, None, "request"),
        UsedFeature("age_years", 33.0, T0, "online"),
        UsedFeature("has_default", 1.0, None, "request"),
    ]
    want = _reference([[0.05, 33, 1]])
    np.testing.assert_allclose(
        _probabilities(prediction.outputs), want["probabilities"][0], rtol=1e-5, atol=1e-6
    )


def test_missing_features_name_each_entity_and_feature(client: redis.Redis, store: Store) -> None:
    model_id, one, two, full = _id("m"), _id("one"), _id("two"), _id("full")
    _serve(client, model_id)
    _online(client, {one: {"age_years": 40}, full: dict.fromkeys(NAMES, 1.0)})
    _duckdb(store, {one: {"has_default": 1}}, T0)
    with pytest.raises(MissingFeaturesError) as caught:
        _predictor(client, LocalReader(store)).predict(model_id, [one, full, two])
    assert caught.value.missing == {
        one: ["debt_to_income_ratio"],
        two: ["debt_to_income_ratio", "age_years", "has_default"],
    }
    assert f"{one}: debt_to_income_ratio" in str(caught.value)
    counted = REGISTRY.get_sample_value(
        "fstore_missing_features_total", {"model": model_id, "feature": "age_years"}
    )
    assert counted == 1.0
    # Without a reader there is no fallback: DuckDB's has_default is not used.
    with pytest.raises(MissingFeaturesError) as without:
        _predictor(client).predict(model_id, [one])
    assert without.value.missing == {one: ["debt_to_income_ratio", "has_default"]}


@pytest.mark.parametrize(
    ("entities", "overrides", "error", "message"),
    [
        ([], None, ValidationError, "must not be empty"),
        (["a", "b", "c", "d"], None, LimitError, "4 entities in one call, over the limit of 3"),
        (["a", ""], None, ValidationError, r"entity_ids\[1\]"),
        (["a\x00b"], None, ValidationError, "NUL"),
        (["x" * 257], None, ValidationError, "1-256 characters"),
        (["a"], {"a": {"income": 1.0}}, ValidationError, "'income' .* is not a feature"),
        (["a"], {"b": {"age_years": 1.0}}, ValidationError, "not a requested entity"),
        (["a"], {"a": {"age_years": float("nan")}}, ValidationError, "not a finite number"),
        (["a"], {"a": {"age_years": float("inf")}}, ValidationError, "not a finite number"),
        (
            ["a"],
            {"a": {"debt_to_income_ratio": 0.3, "age_years": 1e300, "has_default": 0.0}},
            ValidationError,
            r"age_years=1e\+300 of 'a': outside the range of its float32 input",
        ),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(
    client: redis.Redis,
    entities: list[str],
    overrides: dict[str, dict[str, float]] | None,
    error: type[Exception],
    message: str,
) -> None:
    model_id = _id("m")
    _serve(client, model_id)
    with pytest.raises(error, match=message):
        _predictor(client, max_entities=3).predict(model_id, entities, overrides)


def test_a_stored_value_the_model_cannot_take_is_not_the_callers_fault(
    client: redis.Redis,
) -> None:
    # 1e300 is a finite stored value (PushFeatures accepts it) that overflows the float32
    # input: the caller sent nothing wrong, so not INVALID_ARGUMENT's ValidationError.
    model_id, good, bad = _id("m"), _id("e"), _id("e")
    _serve(client, model_id)
    row = {"debt_to_income_ratio": 0.3, "age_years": 40.0, "has_default": 0.0}
    _online(client, {good: row, bad: {**row, "debt_to_income_ratio": 1e300}})
    predictor = _predictor(client)
    with pytest.raises(UnusableFeaturesError, match=rf"debt_to_income_ratio=1e\+300 of '{bad}'"):
        predictor.predict(model_id, [good, bad])
    # The same value sent with the request is the caller's.
    with pytest.raises(ValidationError) as caught:
        predictor.predict(model_id, [good], {good: {"debt_to_income_ratio": 1e300}})
    assert not isinstance(caught.value, UnusableFeaturesError)
    # A request value that replaces the stored one makes the entity servable.
    result = predictor.predict(model_id, [bad], {bad: {"debt_to_income_ratio": 0.3}})
    assert result.predictions[0].features[0] == UsedFeature(
        "debt_to_income_ratio", 0.3, None, "request"
    )


def test_unknown_model(client: redis.Redis) -> None:
    with pytest.raises(ModelNotFoundError, match="'nope' is not served"):
        _predictor(client).predict("nope", ["a"])


def _loads(model_id: str, outcome: str) -> float:
    labels = {"model": model_id, "outcome": outcome}
    return REGISTRY.get_sample_value("fstore_model_loads_total", labels) or 0.0


def test_cache_loads_each_version_once_and_keeps_it_through_a_bad_one(client: redis.Redis) -> None:
    model_id, entity = _id("m"), _id("e")
    _online(client, {entity: {"debt_to_income_ratio": 0.4, "age_years": 30, "has_default": 0}})
    cache = ModelCache(client, allow_pickle=False)
    predictor = Predictor(client, cache, None, max_entities=10, fallback_timeout_s=1)
    _serve(client, model_id, "1.0.0", bias=-0.2)
    cache.refresh()
    first = cache.get(model_id)
    cache.refresh()
    assert cache.get(model_id) is first
    assert _loads(model_id, "ok") == 1
    _serve(client, model_id, "2.0.0", bias=1.5)
    cache.refresh()
    result = predictor.predict(model_id, [entity])
    assert result.version == "2.0.0"
    want = _reference([[0.4, 30, 0]], bias=1.5)
    np.testing.assert_allclose(
        _probabilities(result.predictions[0].outputs),
        want["probabilities"][0],
        rtol=1e-5,
        atol=1e-6,
    )
    assert _loads(model_id, "ok") == 2
    # A broken version (published around the sync's validation) leaves 2.0.0 served and is
    # not retried at every refresh.
    om.publish_model(client, model_id, "3.0.0", {"onnx": b"corrupt"}, FEATURES)
    cache.refresh()
    cache.refresh()
    assert cache.get(model_id).version == "2.0.0"
    assert _loads(model_id, "onnx_invalid") == 1
    assert model_id in cache.served()
    pipe = client.pipeline(transaction=True)
    manifest.unpublish(pipe, model_id, [f"model:{model_id}:onnx"])
    pipe.execute()
    cache.refresh()
    assert model_id not in cache.served()
    with pytest.raises(ModelNotFoundError):
        cache.get(model_id)


def test_refresh_loop_serves_a_new_model_without_a_restart(client: redis.Redis) -> None:
    model_id = _id("m")
    cache = ModelCache(client, allow_pickle=False)
    stop = threading.Event()
    loop = threading.Thread(target=cache.run, args=(stop, 0.05), daemon=True)
    loop.start()
    try:
        _serve(client, model_id, "1.0.0")
        assert wait_until(lambda: model_id in cache.served(), timeout=10)
        _serve(client, model_id, "1.1.0")
        assert wait_until(lambda: cache.get(model_id).version == "1.1.0", timeout=10)
    finally:
        stop.set()
        loop.join(timeout=5)
    assert not loop.is_alive()


@pytest.mark.parametrize(
    "stored", [b"-1500000:2.5", "-1500000:2.5", b"-1500000:2.5:1700000000000000"]
)
def test_stored_values_parse_from_bytes_or_text(stored: bytes | str) -> None:
    micros, value = parse_stored(stored)
    assert (micros, value) == (-1_500_000, 2.5)
    assert from_micros(micros) == dt.datetime(1969, 12, 31, 23, 59, 58, 500000)
