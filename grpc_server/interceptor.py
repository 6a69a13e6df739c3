"""Server interceptor timing every unary call by service, method and status code
(fstore_grpc_request_seconds); streaming calls (health Watch, reflection) pass untimed,
their length is the client's choice. A unary request that does not decode (a string field
that is not UTF-8, bytes that are not the message) is INVALID_ARGUMENT, where gRPC itself
answers INTERNAL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import Histogram

from featurestore import metrics
from featurestore.errors import ValidationError
from grpc_server.status import status_for

Handler = Any  # grpc.RpcMethodHandler (grpc has no type hints)
Behavior = Callable[[Any, grpc.ServicerContext], Any]


class _Undecodable:
    """What a request that did not decode is handed to the handler as."""


_UNDECODABLE = _Undecodable()


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The deserializer, giving _UNDECODABLE instead of raising (which gRPC answers with
    INTERNAL, a server fault, before any handler runs)."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


def _split(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Times each unary-unary call's handler and counts it under its final status code.

    Cost (bench/interceptor_cost.py): microseconds per call in-process, much of it
    Histogram.observe; a loopback echo call's p50 barely moved (README, Benchmarks).
    """

    def __init__(self, histogram: Histogram = metrics.GRPC_REQUEST_SECONDS) -> None:
        self.histogram = histogram
        # Wrapped handlers by method path, and histogram children by labels: resolved once,
        # so that a call costs a dict lookup instead of building a handler and a label key.
        self._handlers: dict[str, Handler] = {}
        self._children: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """The method's handler, wrapped with the timer when it is unary-unary."""
        full_method: str = handler_call_details.method
        wrapped = self._handlers.get(full_method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        # None: an unknown method (UNIMPLEMENTED), never a label, so never timed.
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._timed(full_method, handler.unary_unary),
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        with self._lock:
            self._handlers[full_method] = wrapped
        return wrapped

    def _child(self, service: str, method: str, code: str) -> Any:
        key = (service, method, code)
        child = self._children.get(key)
        if child is None:
            child = self.histogram.labels(service, method, code)
            with self._lock:
                self._children[key] = child
        return child

    def _timed(self, full_method: str, behavior: Behavior) -> Behavior:
        service, method = _split(full_method)
        undecodable = f"the request is not a valid {method} message (strings must be UTF-8)"

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                if request is _UNDECODABLE:
                    context.abort(*status_for(ValidationError(undecodable)))
                response = behavior(request, context)
            except BaseException:
                # context.abort raised after setting the code; anything else is UNKNOWN.
                code = context.code() or grpc.StatusCode.UNKNOWN
                self._child(service, method, code.name).observe(time.perf_counter() - started)
                raise
            code = context.code() or grpc.StatusCode.OK
            self._child(service, method, code.name).observe(time.perf_counter() - started)
            return response

        return timed
