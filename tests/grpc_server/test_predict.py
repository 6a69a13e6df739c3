"""Predict through a real channel to a server built in-process on real Redis (and DuckDB for
the fallback): outputs equal to ONNX Runtime run here on the same features, features with
their origin, and each error of the status table provoked for real."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
import redis

from featurestore.services import ManagedService
from featurestore.settings import Settings
from featurestore.store import merger
from featurestore.store.database import OffsetSpan, Store
from featurestore.store.local_reader import LocalReader
from grpc_server.generated import featurestore_pb2 as pb
from tests.grpc_server.inprocess import Running, put_online, running_server
from tests.serving.onnx_models import linear_classifier, publish_model, scaler_json

pytestmark = pytest.mark.integration

FEATURES = [("debt_to_income_ratio", "float"), ("age_years", "int"), ("has_default", "bool")]
WEIGHTS = [2.0, -0.8, 1.5]
BIAS = 0.3
MEAN = [0.35, 40.0, 0.1]
SCALE = [0.2, 12.0, 0.3]
T1 = dt.datetime(2024, 5, 1, 10, 0, 0, 250000)
T2 = dt.datetime(2024, 5, 3, 8, 15)
ONLINE, FALLBACK, REQUEST = pb.UsedFeature.ONLINE, pb.UsedFeature.FALLBACK, pb.UsedFeature.REQUEST


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("duckdb") / "features.duckdb")
    yield store
    store.close()


def write_duckdb(store: Store, rows: list[tuple[str, str, float, dt.datetime]]) -> None:
    """Rows into the features table and folded into the latest-values table."""
    start = store.resume_offset("features", 0, 0)
    table = pa.table(
        {
            "entity_id": [r[0] for r in rows],
            "feature_name": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "event_timestamp": pa.array([r[3] for r in rows], pa.timestamp("us")),
        }
    )
    offsets = pa.array(range(start, start + len(rows)), pa.int64())
    store.write_batch(table, offsets, OffsetSpan("features", 0, start, start + len(rows) - 1))
    merger.merge(store.cursor())


@pytest.fixture
def model(settings: Settings, redis_service: ManagedService) -> dict[str, bytes]:
    client = redis.Redis.from_url(settings.redis_url)
    model_id = f"credit_{uuid.uuid4().hex[:6]}"
    artifacts = {
        "onnx": linear_classifier(3, WEIGHTS, BIAS),
        "json": scaler_json(MEAN, SCALE),
    }
    publish_model(client, model_id, "1.2.0", artifacts, FEATURES)
    return {"id": model_id.encode(), **artifacts}


@pytest.fixture
def server(settings: Settings, store: Store, model: dict[str, bytes]) -> Iterator[Running]:
    with running_server(settings, reader=LocalReader(store)) as running:
        running.models.refresh()
        yield running


def reference(model: dict[str, bytes], raw: np.ndarray) -> dict[str, np.ndarray]:
    """The model run here in ONNX Runtime on raw rows, cast and scaled as declared."""
    x = raw.astype(np.float64).copy()
    x[:, 1] = np.round(x[:, 1])
    x[:, 2] = (x[:, 2] != 0).astype(np.float64)
    x = (x - np.asarray(MEAN)) / np.asarray(SCALE)
    session = ort.InferenceSession(model["onnx"], providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": x.astype(np.float32)})
    return {"label": label, "probabilities": probabilities}


def tag() -> str:
    return f"p{uuid.uuid4().hex[:8]}_"


def test_predict_equals_onnx_runtime_in_process(
    server: Running, settings: Settings, model: dict[str, bytes]
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    t = tag()
    stored = {
        f"{t}a": [0.31, 41.0, 0.0],
        f"{t}b": [0.72, 23.4, 1.0],
        f"{t}c": [0.05, 67.6, 3.0],  # rounds to 68, bool of 3 is 1
    }
    for entity, values in stored.items():
        put_online(
            client,
            entity,
            {name: (value, T1) for (name, _), value in zip(FEATURES, values, strict=True)},
        )
    request = pb.PredictRequest(model_id=model["id"].decode(), entity_ids=list(stored))
    request.overrides[f"{t}b"].values["age_years"] = 52.0
    reply = server.stub.Predict(request)

    used = {entity: list(values) for entity, values in stored.items()}
    used[f"{t}b"][1] = 52.0
    expected = reference(model, np.array(list(used.values())))
    assert (reply.model_id, reply.model_version) == (model["id"].decode(), "1.2.0")
    assert len(reply.request_id) == 32 and int(reply.request_id, 16) >= 0
    assert [p.entity_id for p in reply.predictions] == list(stored)
    for i, prediction in enumerate(reply.predictions):
        outputs = {o.name: list(o.values) for o in prediction.outputs}
        assert outputs["label"] == [float(expected["label"][i])]
        np.testing.assert_allclose(
            outputs["probabilities"], expected["probabilities"][i], rtol=1e-6
        )
        assert [f.name for f in prediction.features] == [name for name, _ in FEATURES]
        assert [f.value for f in prediction.features] == list(used.values())[i]
    b_features = reply.predictions[1].features
    assert [f.origin for f in b_features] == [ONLINE, REQUEST, ONLINE]
    assert b_features[0].event_timestamp.ToDatetime() == T1
    assert not b_features[1].HasField("event_timestamp")
    # Two entities of three had different labels: the comparison is not vacuous.
    assert len(set(expected["label"].tolist())) == 2


def test_request_id_is_echoed(server: Running, model: dict[str, bytes]) -> None:
    request = pb.PredictRequest(model_id=model["id"].decode(), entity_ids=["anyone"])
    for name, _ in FEATURES:
        request.overrides["anyone"].values[name] = 1.0
    request.request_id = "req-42"
    reply = server.stub.Predict(request)
    assert reply.request_id == "req-42"
    assert [f.origin for f in reply.predictions[0].features] == [REQUEST] * 3


def test_entities_absent_from_redis_fall_back_to_duckdb(
    server: Running, settings: Settings, store: Store, model: dict[str, bytes]
) -> None:
    t = tag()
    client = redis.Redis.from_url(settings.redis_url)
    put_online(client, f"{t}half", {"debt_to_income_ratio": (0.4, T1)})
    write_duckdb(
        store,
        [
            (f"{t}half", "age_years", 33.0, T2),
            (f"{t}half", "has_default", 0.0, T2),
            (f"{t}cold", "debt_to_income_ratio", 0.9, T2),
            (f"{t}cold", "age_years", 58.0, T2),
            (f"{t}cold", "has_default", 1.0, T1),
        ],
    )
    reply = server.stub.Predict(
        pb.PredictRequest(model_id=model["id"].decode(), entity_ids=[f"{t}half", f"{t}cold"])
    )
    half, cold = reply.predictions
    assert [(f.value, f.origin) for f in half.features] == [
        (0.4, ONLINE),
        (33.0, FALLBACK),
        (0.0, FALLBACK),
    ]
    assert [f.origin for f in cold.features] == [FALLBACK] * 3
    assert [f.event_timestamp.ToDatetime() for f in cold.features] == [T2, T2, T1]
    expected = reference(model, np.array([[0.4, 33.0, 0.0], [0.9, 58.0, 1.0]]))
    for i, prediction in enumerate(reply.predictions):
        probabilities = next(o.values for o in prediction.outputs if o.name == "probabilities")
        np.testing.assert_allclose(probabilities, expected["probabilities"][i], rtol=1e-6)


def test_missing_features_name_each_feature_of_each_entity(
    server: Running, settings: Settings, model: dict[str, bytes]
) -> None:
    t = tag()
    client = redis.Redis.from_url(settings.redis_url)
    put_online(client, f"{t}x", {"debt_to_income_ratio": (0.2, T1), "age_years": (30, T1)})
    put_online(client, f"{t}y", {"age_years": (30, T1)})
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Predict(
            pb.PredictRequest(model_id=model["id"].decode(), entity_ids=[f"{t}x", f"{t}y"])
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (
        f"model {model['id'].decode()} is missing features "
        f"({t}x: has_default; {t}y: debt_to_income_ratio, has_default)"
    )


def test_unknown_model_is_not_found_and_named(server: Running) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Predict(pb.PredictRequest(model_id="no_such_model", entity_ids=["a"]))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_model" in caught.value.details()


@pytest.mark.parametrize(
    ("overrides", "entities", "needle"),
    [
        ({"a": {"nope": 1.0}}, ["a"], "'nope' (given for 'a') is not a feature of model"),
        ({"a": {"age_years": float("nan")}}, ["a"], "'age_years' of 'a' is not a finite number"),
        ({"b": {"age_years": 1.0}}, ["a"], "given for 'b', not a requested entity"),
        ({}, [], "entity_ids must not be empty"),
        ({}, [f"e{i}" for i in range(1001)], "1001 entities in one call, over the limit of 1000"),
    ],
    ids=["unknown-feature", "nan", "not-requested", "no-entities", "over-limit"],
)
def test_bad_predict_requests_are_invalid_argument(
    server: Running,
    model: dict[str, bytes],
    overrides: dict[str, dict[str, float]],
    entities: list[str],
    needle: str,
) -> None:
    request = pb.PredictRequest(model_id=model["id"].decode(), entity_ids=entities)
    for entity, values in overrides.items():
        request.overrides[entity].values.update(values)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Predict(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in caught.value.details()


def test_a_failing_fallback_read_is_failed_precondition_without_its_text(
    settings: Settings, redis_service: ManagedService, model: dict[str, bytes], tmp_path: Path
) -> None:
    broken = Store(tmp_path / "broken.duckdb")
    broken.cursor().execute("DROP TABLE latest_features")
    try:
        with running_server(settings, reader=LocalReader(broken)) as running:
            running.models.refresh()
            with pytest.raises(grpc.RpcError) as caught:
                running.stub.Predict(
                    pb.PredictRequest(model_id=model["id"].decode(), entity_ids=[tag()])
                )
    finally:
        broken.close()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "the request cannot be served"


def test_unexpected_error_is_internal_with_no_text(
    server: Running, settings: Settings, model: dict[str, bytes]
) -> None:
    t = tag()
    client = redis.Redis.from_url(settings.redis_url)
    # A value the writer never stores: decoding it fails with a plain ValueError.
    client.hset(f"online:{t}bad", mapping={name: "not-a-value" for name, _ in FEATURES})
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Predict(
            pb.PredictRequest(model_id=model["id"].decode(), entity_ids=[f"{t}bad"])
        )
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"
