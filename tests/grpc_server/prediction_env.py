"""What the prediction-log tests share: a gRPC server built in-process with a prediction
sink, feature events sent through Kafka, and the log read back through the DuckDB service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import orjson
import pyarrow as pa
import redis
from celery import Celery
from confluent_kafka import Producer

from featurestore.serving.prediction_log import PredictionSink
from featurestore.serving.runtime import ModelCache
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.generated import grpc_predict_v2_pb2_grpc as oip_grpc
from grpc_server.main import build_server, build_serving
from tasks.client.query import query_table

Event = tuple[str, str, float, dt.datetime]


@dataclass
class LoggingServer:
    """A started server whose Serving hands its answers to the sink."""

    stub: pb_grpc.FeatureStoreStub
    infer: oip_grpc.GRPCInferenceServiceStub
    models: ModelCache


@contextmanager
def logging_server(settings: Settings, sink: PredictionSink) -> Iterator[LoggingServer]:
    """build_serving + build_server on the settings' Redis, a free port, the given sink."""
    local = settings.model_copy(update={"grpc_host": "localhost", "grpc_port": 0})
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    serving, models = build_serving(local, client, None, None, sink)
    server, port, _health = build_server(local, serving, models, lambda: True)
    server.start()
    channel = grpc.insecure_channel(f"localhost:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield LoggingServer(
            pb_grpc.FeatureStoreStub(channel),
            oip_grpc.GRPCInferenceServiceStub(channel),
            models,
        )
    finally:
        channel.close()
        server.stop(grace=None)
        client.close()


def produce_events(settings: Settings, events: list[Event]) -> None:
    """Feature events to the features topic in one message, confirmed by Kafka."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    payload = [
        {
            "entity_id": entity,
            "feature_name": name,
            "value": value,
            "event_timestamp": stamp.isoformat() + "Z",
        }
        for entity, name, value, stamp in events
    ]
    producer.produce(settings.features_topic, orjson.dumps(payload))
    assert producer.flush(30) == 0


def logged(app: Celery, model_id: str) -> pa.Table:
    """The model's rows of prediction_log, in the order they were consumed."""
    return query_table(
        app,
        "SELECT * FROM prediction_log WHERE model_id = ? ORDER BY kafka_partition, kafka_offset",
        [model_id],
        timeout=60,
    )


def logged_count(app: Celery, model_id: str) -> int:
    """Rows of the model in prediction_log (0 while the service does not answer)."""
    try:
        table = query_table(
            app, "SELECT count(*) AS n FROM prediction_log WHERE model_id = ?", [model_id]
        )
    except Exception:  # noqa: BLE001 - the caller waits for a count; a failed read is 0
        return 0
    return int(table.column("n")[0].as_py())
