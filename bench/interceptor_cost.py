"""python -m bench.interceptor_cost: what grpc_server.interceptor adds to each unary call.

Two measurements, kinds taking turns so machine load hits both alike:
- in-process: the interceptor's own work for one call (handler lookup, two clocks, the
  histogram child, observe) against calling the handler bare, 200k calls;
- whole calls: a raw-bytes echo over loopback gRPC, sequential, on a server with the
  interceptor and one without (median and p99 of 3000 calls each, 5 rounds).
The last line of output is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram

from bench.common import percentile
from grpc_server.interceptor import MetricsInterceptor

SERVICE = "bench.Echo"


def echo(request: bytes, _context: Any) -> bytes:
    return request


class _Context:
    def code(self) -> None:
        return None


class _Details:
    method = f"/{SERVICE}/Echo"


def _histogram() -> Histogram:
    registry = CollectorRegistry()
    return Histogram("b_seconds", "b", ["service", "method", "code"], registry=registry)


def in_process(calls: int = 200_000) -> dict[str, float]:
    """Nanoseconds per call of the bare handler and of the intercepted path."""
    interceptor = MetricsInterceptor(_histogram())
    handler = grpc.unary_unary_rpc_method_handler(echo)
    details, context = _Details(), _Context()

    def intercepted() -> None:
        wrapped: Any = interceptor.intercept_service(lambda _d: handler, details)
        wrapped.unary_unary(b"x", context)

    def bare() -> None:
        echo(b"x", context)

    best: dict[str, float] = {"bare": float("inf"), "intercepted": float("inf")}
    for _ in range(5):
        for name, step in (("bare", bare), ("intercepted", intercepted)):
            began = time.perf_counter()
            for _ in range(calls):
                step()
            best[name] = min(best[name], (time.perf_counter() - began) / calls * 1e9)
    return best


def _server(interceptors: list[grpc.ServerInterceptor]) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("localhost:0")
    server.start()
    return server, port


def _round(call: Callable[..., bytes], calls: int) -> list[float]:
    took = []
    for _ in range(calls):
        began = time.perf_counter()
        call(b"x", timeout=10)
        took.append((time.perf_counter() - began) * 1e6)
    return took


def whole_calls(calls: int = 3000, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Microseconds per sequential echo call, with and without the interceptor."""
    servers = {
        "without": _server([]),
        "with": _server([MetricsInterceptor(_histogram())]),
    }
    channels = {k: grpc.insecure_channel(f"localhost:{port}") for k, (_s, port) in servers.items()}
    stubs = {k: ch.unary_unary(f"/{SERVICE}/Echo") for k, ch in channels.items()}
    took: dict[str, list[float]] = {k: [] for k in stubs}
    for stub in stubs.values():
        _round(stub, 500)  # warm-up: connection, thread pool
    for _ in range(rounds):
        for name, stub in stubs.items():
            took[name] += _round(stub, calls)
    for channel in channels.values():
        channel.close()
    for server, _port in servers.values():
        server.stop(grace=None)
    return {
        k: {"p50_us": statistics.median(v), "p99_us": percentile(v, 0.99)} for k, v in took.items()
    }


def main() -> None:
    """Run both measurements and print them."""
    inproc = in_process()
    print(
        f"in-process ns/call: bare {inproc['bare']:.0f}, intercepted {inproc['intercepted']:.0f},"
        f" added {inproc['intercepted'] - inproc['bare']:.0f}"
    )
    calls = whole_calls()
    for name, figures in calls.items():
        print(f"{name} interceptor: p50 {figures['p50_us']:.1f} us, p99 {figures['p99_us']:.1f} us")
    print(json.dumps({"in_process_ns": inproc, "whole_calls_us": calls}))


if __name__ == "__main__":
    main()
