"""The gRPC error wrapper on its own, on a server built in-process with build_server whose
domain objects fail with an internal error: every method of every service answers with
its status and a fixed text (INTERNAL never carries the error's text, which only the log
has), and health goes NOT_SERVING when readiness cannot be checked (no services)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2

from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import grpc_predict_v2_pb2 as oip
from grpc_server.main import build_server, watch_health
from tests.helpers import wait_until

SECRET = "password=hunter2 at /srv/fstore/state/redis.conf"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Broken:
    """A domain object (Serving, ModelCache) every call of which fails with internal text."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError(f"{name} failed: {SECRET}")

        return fail


def never_ready() -> bool:
    raise RuntimeError(SECRET)


@pytest.fixture
def channel(settings: Settings) -> Iterator[grpc.Channel]:
    local = settings.model_copy(update={"grpc_host": "localhost", "grpc_port": 0})
    server, port, _ = build_server(local, Broken(), Broken(), never_ready)  # type: ignore[arg-type]
    server.start()
    try:
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            yield channel
    finally:
        server.stop(grace=None)


def methods() -> list[tuple[str, type[Message]]]:
    """Every method of the two services, with its request type."""
    found = []
    for descriptor in (
        pb.DESCRIPTOR.services_by_name["FeatureStore"],
        oip.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    ):
        for method in descriptor.methods:
            request = message_factory.GetMessageClass(method.input_type)
            found.append((f"/{descriptor.full_name}/{method.name}", request))
    return found


# Requests that pass every check of the request itself, so that the call reaches the
# failing domain object.
VALID: dict[str, Message] = {
    "GetOnlineFeatures": pb.GetOnlineFeaturesRequest(entity_id="e"),
    "GetModel": pb.GetModelRequest(model_id="m"),
    "Predict": pb.PredictRequest(model_id="m", entity_ids=["e"]),
    "PushFeatures": pb.PushFeaturesRequest(
        events=[pb.FeatureEvent(entity_id="e", feature_name="f", value=1.0)]
    ),
    "ModelReady": oip.ModelReadyRequest(name="m"),
    "ModelMetadata": oip.ModelMetadataRequest(name="m"),
    "ModelInfer": oip.ModelInferRequest(model_name="m"),
}
VALID["PushFeatures"].events[0].event_timestamp.FromSeconds(1_700_000_000)  # type: ignore[attr-defined]
# What needs no domain object, and what the server does not implement.
ANSWERED = {"ServerLive", "ServerMetadata"}
UNIMPLEMENTED = {"RepositoryModelLoad", "RepositoryModelUnload"}


@pytest.mark.parametrize(("path", "request_type"), methods(), ids=lambda v: str(v).split("/")[-1])
def test_an_internal_error_reaches_the_client_as_internal_without_its_text(
    channel: grpc.Channel,
    path: str,
    request_type: type[Message],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = path.rpartition("/")[2]
    request = VALID.get(name, request_type())
    call = channel.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    if name in ANSWERED:
        assert call(request, timeout=10)
        return
    with (
        caplog.at_level(logging.WARNING, logger="grpc_server.status"),
        pytest.raises(grpc.RpcError) as caught,
    ):
        call(request, timeout=10)
    if name in UNIMPLEMENTED:
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        return
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INTERNAL,
        "internal error",
    )
    # The operator's log has the error with its traceback; the client has none of it.
    logged = [r for r in caplog.records if r.getMessage().startswith("grpc_error")]
    assert logged and logged[-1].exc_info is not None
    assert SECRET in str(logged[-1].exc_info[1])


def test_every_method_is_covered_by_the_table_above() -> None:
    names = {path.rpartition("/")[2] for path, _ in methods()}
    assert names - ANSWERED - UNIMPLEMENTED <= set(VALID) | {"ListModels", "ServerReady"}


def test_health_goes_not_serving_when_readiness_cannot_be_checked() -> None:
    servicer = health.HealthServicer()
    answers: list[bool | Exception] = [True]

    def ready() -> bool:
        answer = answers[-1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    stop = threading.Event()
    watcher = threading.Thread(target=watch_health, args=(servicer, ready, stop, 0.02))
    watcher.start()

    def status() -> int:
        request = health_pb2.HealthCheckRequest(service="")
        return int(servicer.Check(request, None).status)

    try:
        assert wait_until(lambda: status() == SERVING, timeout=10)
        answers.append(RuntimeError(SECRET))  # the check itself fails (not just False)
        assert wait_until(lambda: status() == NOT_SERVING, timeout=10)
        assert watcher.is_alive()
        answers.append(True)
        assert wait_until(lambda: status() == SERVING, timeout=10)
    finally:
        stop.set()
        watcher.join(timeout=10)
