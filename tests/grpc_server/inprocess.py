"""A gRPC server built in the test process with build_server, on real Redis, and its channel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from featurestore.constants import online_feature_key
from featurestore.ingest.publisher import EventPublisher
from featurestore.reads.reader import Reader
from featurestore.serving.runtime import ModelCache
from featurestore.serving.service import Serving
from featurestore.settings import Settings
from grpc_server.auth import client_channel
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.main import build_server, build_serving
from grpc_server.startup import Readiness

_EPOCH = dt.datetime(1970, 1, 1)


@dataclass
class Running:
    """A started server: its stub, channel, and the objects behind it."""

    stub: pb_grpc.FeatureStoreStub
    channel: grpc.Channel
    port: int
    serving: Serving
    models: ModelCache
    readiness: Readiness
    health_servicer: health.HealthServicer

    def health(self, service: str = "") -> int:
        """The health service's answer for a service name."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(reply.status)


@contextmanager
def running_server(
    settings: Settings,
    *,
    reader: Reader | None = None,
    publisher: EventPublisher | None = None,
) -> Iterator[Running]:
    """build_server on the settings' Redis, on a free port; stopped on exit."""
    local = settings.model_copy(update={"grpc_host": "localhost", "grpc_port": 0})
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    serving, models = build_serving(local, client, reader, publisher)
    readiness = Readiness(serving, models)
    server, port, health_servicer = build_server(local, serving, models, readiness)
    server.start()
    # TLS and the bearer token when the settings ask for them, as the CLI's clients do.
    channel = client_channel(local, f"localhost:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield Running(
            pb_grpc.FeatureStoreStub(channel),
            channel,
            port,
            serving,
            models,
            readiness,
            health_servicer,
        )
    finally:
        channel.close()
        server.stop(grace=None)
        client.close()


def put_online(
    client: redis.Redis, entity_id: str, values: dict[str, tuple[float, dt.datetime]]
) -> None:
    """Write an entity's latest values as the writer does: "<event micros>:<value>"."""
    items: list[str] = []
    for name, (value, stamp) in values.items():
        items += [name, f"{(stamp - _EPOCH) // dt.timedelta(microseconds=1)}:{value!r}"]
    client.hset(online_feature_key(entity_id), items=items)
