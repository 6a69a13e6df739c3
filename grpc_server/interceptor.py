"""Server interceptor timing every unary call by service, method and status code
(fstore_grpc_request_seconds); streaming calls (health Watch, reflection) pass untimed,
their length is the client's choice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Histogram

from featurestore import metrics

Handler = Any  # grpc.RpcMethodHandler (grpc has no type hints)
Behavior = Callable[[Any, grpc.ServicerContext], Any]


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
            request_deserializer=handler.request_deserializer,
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

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
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
