"""The health service answers for the server and for each service a probe may name."""

from __future__ import annotations

import threading

from grpc_health.v1 import health, health_pb2

from grpc_server.main import watch_health
from tests.helpers import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NAMES = ("", "featurestore.v1.FeatureStore", "inference.GRPCInferenceService")


class Context:
    """What HealthServicer.Check sets on an unknown service (NOT_FOUND), kept to be read."""

    code: object = None

    def set_code(self, code: object) -> None:
        self.code = code


def _status(servicer: health.HealthServicer, name: str) -> object:
    context = Context()
    answer = servicer.Check(health_pb2.HealthCheckRequest(service=name), context)
    return context.code or answer.status


def test_every_served_service_turns_serving_with_the_server() -> None:
    servicer = health.HealthServicer()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_health, args=(servicer, lambda: True, stop, 0.02))
    watcher.start()
    try:
        # A KServe/Triton probe names the inference service: it was NOT_FOUND.
        assert wait_until(lambda: all(_status(servicer, n) == SERVING for n in NAMES), 10), [
            _status(servicer, n) for n in NAMES
        ]
    finally:
        stop.set()
        watcher.join(timeout=10)
