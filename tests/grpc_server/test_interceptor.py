"""The metrics interceptor times unary calls under their final status code (a real gRPC
server with raw-bytes methods, no services)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from prometheus_client import CollectorRegistry, Histogram

from grpc_server.interceptor import MetricsInterceptor

SERVICE = "test.Echo"


def ok(request: bytes, _context: grpc.ServicerContext) -> bytes:
    return request


def invalid(_request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    raise AssertionError("abort returned")


def crash(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("internal detail")


def quiet_not_found(_request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    return b""


def stream(request: bytes, _context: grpc.ServicerContext) -> Iterator[bytes]:
    yield request
    yield request


@pytest.fixture
def served() -> Iterator[tuple[grpc.Channel, CollectorRegistry]]:
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "t", ["service", "method", "code"], registry=registry)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[MetricsInterceptor(histogram)],
    )
    handlers = {
        "Ok": grpc.unary_unary_rpc_method_handler(ok),
        "Invalid": grpc.unary_unary_rpc_method_handler(invalid),
        "Crash": grpc.unary_unary_rpc_method_handler(crash),
        "QuietNotFound": grpc.unary_unary_rpc_method_handler(quiet_not_found),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("localhost:0")
    server.start()
    channel = grpc.insecure_channel(f"localhost:{port}")
    try:
        yield channel, registry
    finally:
        channel.close()
        server.stop(grace=None)


def count(registry: CollectorRegistry, method: str, code: str) -> float:
    labels = {"service": SERVICE, "method": method, "code": code}
    return registry.get_sample_value("t_seconds_count", labels) or 0.0


def call(channel: grpc.Channel, method: str) -> grpc.StatusCode:
    try:
        channel.unary_unary(f"/{SERVICE}/{method}")(b"x", timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("Ok", "OK"),
        ("Invalid", "INVALID_ARGUMENT"),
        ("Crash", "UNKNOWN"),
        ("QuietNotFound", "NOT_FOUND"),
    ],
)
def test_a_unary_call_is_timed_under_its_status(
    served: tuple[grpc.Channel, CollectorRegistry], method: str, code: str
) -> None:
    channel, registry = served
    assert call(channel, method).name == code
    assert call(channel, method).name == code
    assert count(registry, method, code) == 2
    labels = {"service": SERVICE, "method": method, "code": code}
    assert (registry.get_sample_value("t_seconds_sum", labels) or 0.0) > 0


def test_unknown_methods_and_streams_are_not_timed(
    served: tuple[grpc.Channel, CollectorRegistry],
) -> None:
    channel, registry = served
    assert call(channel, "Nope") == grpc.StatusCode.UNIMPLEMENTED
    replies = list(channel.unary_stream(f"/{SERVICE}/Stream")(b"y", timeout=10))
    assert replies == [b"y", b"y"]
    assert call(channel, "Ok") == grpc.StatusCode.OK
    methods = {
        s.labels["method"]
        for family in registry.collect()
        for s in family.samples
        if s.name == "t_seconds_count"
    }
    assert methods == {"Ok"}
