"""The prediction log against the whole stack: Predict and ModelInfer answers go through
Kafka and the bridge into prediction_log exactly as served; features updated between the
predictions and an online store lagging on purpose give exactly the constructed skew, equal
to a brute-force computation; the training set from the log holds the served values."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from bridge.prediction_publisher import KafkaPredictionLog
from featurestore.settings import Settings
from featurestore.store import skew
from featurestore.store.online import OnlineStore
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import grpc_predict_v2_pb2 as oip
from tasks.app import configure
from tasks.client.query import CeleryReader, query_table
from tests.grpc_server.inprocess import put_online
from tests.grpc_server.prediction_env import (
    LoggingServer,
    logged,
    logged_count,
    logging_server,
    produce_events,
)
from tests.helpers import run_cli, wait_for_count, wait_until
from tests.serving.onnx_models import linear_classifier, publish_model

pytestmark = pytest.mark.integration

FEATURES = ["f_a", "f_b", "f_c"]
T1, T2, T3 = dt.datetime(2024, 6, 1), dt.datetime(2024, 6, 2), dt.datetime(2024, 6, 3)
ORIGINS = {pb.UsedFeature.ONLINE: "online", pb.UsedFeature.FALLBACK: "fallback"}


@pytest.fixture
def server(stack: Settings) -> Iterator[tuple[LoggingServer, str]]:
    client = redis.Redis.from_url(stack.redis_url)
    model_id = f"skew_{uuid.uuid4().hex[:6]}"
    onnx = linear_classifier(3, [0.5, -0.25, 0.125], 0.1)
    publish_model(client, model_id, "1.0", {"onnx": onnx}, [(n, "float") for n in FEATURES])
    sink = KafkaPredictionLog(stack)
    sink.start()
    try:
        with logging_server(stack, sink) as running:
            running.models.refresh()  # loaded once: a later sync may unpublish it from Redis
            yield running, model_id
    finally:
        sink.close()
        client.close()


def wait_online(online: OnlineStore, expected: dict[tuple[str, str], float]) -> None:
    def arrived() -> bool:
        return all(
            (v := online.get(e).get(f)) is not None and v.value == value
            for (e, f), value in expected.items()
        )

    assert wait_until(arrived, timeout=60), "the online store did not get the events"


def predict(server: LoggingServer, model_id: str, entities: list[str], request_id: str) -> Any:
    request = pb.PredictRequest(model_id=model_id, entity_ids=entities, request_id=request_id)
    return server.stub.Predict(request, timeout=10)


def test_skew_shows_exactly_the_constructed_differences(
    stack: Settings, server: tuple[LoggingServer, str], tmp_path: Path
) -> None:
    running, model_id = server
    app = configure(stack)
    client = redis.Redis.from_url(stack.redis_url)
    online = OnlineStore(client)
    tag = f"s{uuid.uuid4().hex[:6]}_"
    entities = [f"{tag}e{i}" for i in range(10)]
    v1 = {(e, f): float(10 * i + j) for i, e in enumerate(entities) for j, f in enumerate(FEATURES)}
    produce_events(stack, [(e, f, v, T1) for (e, f), v in v1.items()])
    assert wait_for_count(app, tag, 30) == 30
    wait_online(online, v1)
    p1 = predict(running, model_id, entities, f"{tag}p1")

    # Updates in between: e0-e5 get new f_a and f_b values.
    v2 = {(e, f): v1[(e, f)] + 0.5 for e in entities[:6] for f in ("f_a", "f_b")}
    produce_events(stack, [(e, f, v, T2) for (e, f), v in v2.items()])
    assert wait_for_count(app, tag, 42) == 42
    wait_online(online, v2)
    # The online store lags on purpose: e0-e2 still serve their old f_a. One entity is
    # online only (the offline store never had it).
    for e in entities[:3]:
        put_online(client, e, {"f_a": (v1[(e, "f_a")], T1)})
    only = f"{tag}online_only"
    put_online(client, only, {f: (1.0 + j, T3) for j, f in enumerate(FEATURES)})
    p2 = predict(running, model_id, [*entities, only], f"{tag}p2")

    # Written after p2 with an event time before it: not what DuckDB knew when p2 was served.
    late = (entities[3], "f_a", 500.0, T2 + dt.timedelta(hours=1))
    produce_events(stack, [late])
    assert wait_for_count(app, tag, 43) == 43
    wait_online(online, {(late[0], late[1]): late[2]})
    p3 = predict(running, model_id, entities, f"{tag}p3")

    infer = oip.ModelInferRequest(model_name=model_id, id=f"{tag}infer")
    infer.inputs.add(name="input", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend(
        [1.0, 2.0, 3.0]
    )
    running.infer.ModelInfer(infer, timeout=10)

    assert wait_until(lambda: logged_count(app, model_id) >= 32, timeout=60)
    records = logged(app, model_id).to_pylist()
    assert len(records) == 32
    check_records_as_served(records, [p1, p2, p3], infer.id)

    expected_differing = {(f"{tag}p{n}", e, "f_a") for n in (2, 3) for e in entities[:3]}
    expected_differing |= {(f"{tag}p2", only, f) for f in FEATURES}
    history = query_table(
        app,
        "SELECT entity_id, feature_name, value, event_timestamp, created_at FROM features "
        "WHERE starts_with(entity_id, ?)",
        [tag],
    ).to_pylist()
    brute_rows, brute_report = brute_force(records, history)
    assert {k for k, row in brute_rows.items() if row["differs"]} == expected_differing

    rows_path = tmp_path / "rows.parquet"
    done = run_cli(stack, "skew", model_id, "--output", str(rows_path), "--format", "json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["predictions"] == 31 and report["rows"] == 93
    assert_report(report["features"], brute_report)
    rows = pq.read_table(rows_path).to_pylist()
    assert {(r["request_id"], r["entity_id"], r["feature_name"]) for r in rows if r["differs"]} == (
        expected_differing
    )
    for row in rows:
        want = brute_rows[(row["request_id"], row["entity_id"], row["feature_name"])]
        assert (row["served_value"], row["truth_value"]) == (want["served"], want["truth"])

    as_read = skew.report(CeleryReader(app), model_id)
    assert [orjson.loads(orjson.dumps(f)) for f in as_read] == report["features"]
    since = min(r["served_at"] for r in records if r["request_id"] == f"{tag}p3")
    later = run_cli(stack, "skew", model_id, "--since", since.isoformat(), "--format", "json")
    f_a = next(f for f in orjson.loads(later.stdout)["features"] if f["feature_name"] == "f_a")
    assert (f_a["predictions"], f_a["differed"]) == (10, 3)

    check_training_set_from_log(stack, model_id, entities, [p1, p2, p3], records, tmp_path)


def check_records_as_served(
    records: list[dict[str, Any]], replies: list[Any], infer_id: str
) -> None:
    """Each logged record holds what its Predict answered: values, origins, event times."""
    by_key = {(r["request_id"], r["entity_id"]): r for r in records}
    for reply in replies:
        for p in reply.predictions:
            record = by_key[(reply.request_id, p.entity_id)]
            assert record["model_version"] == "1.0" and record["source"] == "predict"
            assert [
                (f["name"], f["value"], f["origin"], f["event_timestamp"])
                for f in record["features"]
            ] == [
                (f.name, f.value, ORIGINS[f.origin], f.event_timestamp.ToDatetime())
                for f in p.features
            ]
            outputs = {o["name"]: o["values"] for o in record["outputs"]}
            assert outputs == {o.name: list(o.values) for o in p.outputs}
    (inferred,) = [r for r in records if r["request_id"] == infer_id]
    assert inferred["entity_id"] is None and inferred["source"] == "infer"
    assert [f["value"] for f in inferred["features"]] == [1.0, 2.0, 3.0]


def brute_force(
    records: list[dict[str, Any]], history: list[dict[str, Any]]
) -> tuple[dict[tuple[str, str, str], dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per (request, entity, feature): served value, truth at served time, staleness; and
    the per-feature report, computed row by row in Python."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in records:
        if record["entity_id"] is None:
            continue
        served_at = record["served_at"]
        for f in record["features"]:
            known = [
                (h["event_timestamp"], h["created_at"], h["value"])
                for h in history
                if h["entity_id"] == record["entity_id"]
                and h["feature_name"] == f["name"]
                and h["event_timestamp"] <= served_at
                and h["created_at"] <= served_at
            ]
            truth = max(known)[2] if known else None
            rows[(record["request_id"], record["entity_id"], f["name"])] = {
                "served": f["value"],
                "truth": truth,
                "differs": truth is None or truth != f["value"],
                "staleness": (served_at - f["event_timestamp"]) / dt.timedelta(seconds=1),
            }
    report = {}
    for name in FEATURES:
        mine = [row for key, row in rows.items() if key[2] == name]
        diffs = [abs(r["served"] - r["truth"]) for r in mine if r["truth"] is not None]
        ages = [r["staleness"] for r in mine]
        report[name] = {
            "predictions": len(mine),
            "differed": sum(r["differs"] for r in mine),
            "no_truth": sum(r["truth"] is None for r in mine),
            "mean_abs_diff": sum(diffs) / len(diffs),
            "staleness_p50_s": float(np.percentile(ages, 50)),
            "staleness_p99_s": float(np.percentile(ages, 99)),
        }
    return rows, report


def assert_report(features: list[dict[str, Any]], brute: dict[str, dict[str, Any]]) -> None:
    assert [f["feature_name"] for f in features] == FEATURES
    for f in features:
        want = brute[f["feature_name"]]
        assert (f["predictions"], f["differed"], f["no_truth"]) == (
            want["predictions"],
            want["differed"],
            want["no_truth"],
        )
        assert f["differed_share"] == pytest.approx(want["differed"] / want["predictions"])
        for key in ("mean_abs_diff", "staleness_p50_s", "staleness_p99_s"):
            assert f[key] == pytest.approx(want[key], rel=1e-12), key


def check_training_set_from_log(
    stack: Settings,
    model_id: str,
    entities: list[str],
    replies: list[Any],
    records: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Labels of entity e0 after p1, after p3, and before any prediction."""
    served = {r["request_id"]: r["served_at"] for r in records if r["entity_id"] == entities[0]}
    p1, _p2, p3 = (served[reply.request_id] for reply in replies)
    spine = tmp_path / "spine.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": [entities[0], entities[0], entities[0]],
                "timestamp": [p1 + dt.timedelta(microseconds=1), p3, T1],
                "label": [1, 0, 1],
            }
        ),
        spine,
    )
    out = tmp_path / "train.parquet"
    done = run_cli(stack, "training-set", str(spine), "--from-log", model_id, "--output", str(out))
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out).to_pylist()

    def values(reply: Any) -> list[float]:
        first = next(p for p in reply.predictions if p.entity_id == entities[0])
        return [f.value for f in first.features]

    assert [[r[f] for f in FEATURES] for r in rows] == [
        values(replies[0]),
        values(replies[2]),
        [None, None, None],
    ]
    assert [r["label"] for r in rows] == [1, 0, 1]
