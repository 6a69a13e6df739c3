"""The prediction log with Kafka killed (SIGKILL) while Predicts go on: every Predict is
answered, the buffer drops its oldest calls and counts them, and once Kafka is back every
record it delivered is in prediction_log exactly once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid

import pytest
import redis
from prometheus_client import REGISTRY

from bridge.prediction_publisher import KafkaPredictionLog
from featurestore.services import KafkaService
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from tasks.app import configure
from tasks.client.query import query_table
from tests.grpc_server.inprocess import put_online
from tests.grpc_server.prediction_env import logged_count, logging_server
from tests.helpers import wait_until
from tests.serving.onnx_models import linear_classifier, publish_model

pytestmark = pytest.mark.integration

DAY = dt.datetime(2024, 3, 1)
OUTCOMES = ("delivered", "dropped_full", "dropped_undelivered")
ENTITIES_PER_CALL = 2


def counts() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value(
            "fstore_prediction_log_records_total", {"outcome": outcome}
        )
        or 0.0
        for outcome in OUTCOMES
    }


def test_predict_answers_while_kafka_is_down_and_nothing_is_logged_twice(
    stack: Settings,
) -> None:
    # Small bounds, so that a short outage overflows them.
    settings = stack.model_copy(update={"prediction_log_buffer": 20})
    client = redis.Redis.from_url(settings.redis_url)
    model_id = f"fault_{uuid.uuid4().hex[:6]}"
    onnx = linear_classifier(2, [1.0, -1.0], 0.0)
    publish_model(client, model_id, "1.0", {"onnx": onnx}, [("x", "float"), ("y", "float")])
    entities = [f"{model_id}_e{i}" for i in range(4)]
    for i, entity in enumerate(entities):
        put_online(client, entity, {"x": (float(i), DAY), "y": (0.5, DAY)})
    before = counts()
    sink = KafkaPredictionLog(settings)
    sink.start()
    answered: list[str] = []
    with logging_server(settings, sink) as running:
        running.models.refresh()

        def call() -> None:
            n = len(answered)
            request = pb.PredictRequest(
                model_id=model_id,
                entity_ids=[entities[n % 4], entities[(n + 1) % 4]],
                request_id=f"{model_id}-{n}",
            )
            reply = running.stub.Predict(request, timeout=5)  # raises unless answered
            assert len(reply.predictions) == ENTITIES_PER_CALL
            answered.append(reply.request_id)

        for _ in range(50):
            call()
            time.sleep(0.005)
        assert wait_until(sink.settled, timeout=60)
        at_kill = counts()
        assert at_kill["delivered"] > before["delivered"]

        kafka = KafkaService(settings)
        pid = kafka.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        outage = len(answered)
        while counts()["dropped_full"] == at_kill["dropped_full"] or len(answered) < outage + 300:
            call()
            time.sleep(0.002)
            assert len(answered) < outage + 20_000, "the buffer never overflowed"
        kafka.ensure()
        for _ in range(50):
            call()
            time.sleep(0.005)
        assert wait_until(sink.settled, timeout=180), "the log did not drain after Kafka returned"
    sink.close()

    after = counts()
    delivered = after["delivered"] - before["delivered"]
    dropped_full = after["dropped_full"] - before["dropped_full"]
    dropped = dropped_full + after["dropped_undelivered"] - before["dropped_undelivered"]
    assert after["dropped_full"] > at_kill["dropped_full"]
    assert delivered + dropped == len(answered) * ENTITIES_PER_CALL
    app = configure(stack)
    assert wait_until(lambda: logged_count(app, model_id) >= delivered, timeout=180)
    # A resend goes out batch_resend_after_s after a lost result and nothing signals its
    # end: time passes on purpose, then a resent write batch must have added nothing.
    time.sleep(stack.batch_resend_after_s + 2)
    rows = query_table(
        app,
        "SELECT count(*) AS n, count(DISTINCT (request_id, entity_id)) AS distinct_n, "
        "list(DISTINCT request_id) AS requests FROM prediction_log WHERE model_id = ?",
        [model_id],
        timeout=60,
    ).to_pylist()[0]
    assert rows["n"] == rows["distinct_n"] == delivered
    assert set(rows["requests"]) <= set(answered)
