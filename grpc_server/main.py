"""Entry point of the gRPC server: servicers, health, reflection, model sync at start-up."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from featurestore import constants, metrics, services
from featurestore.serving.service import Serving
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.servicer import FeatureStoreServicer
from tasks.app import configure

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FeatureStore"].full_name


def watch_health(
    health_servicer: health.HealthServicer, serving: Serving, stop: threading.Event
) -> None:
    """SERVING while the online store answers, NOT_SERVING otherwise; checked every 2 s."""
    last = None
    while not stop.is_set():
        state = (
            health_pb2.HealthCheckResponse.SERVING
            if serving.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if state != last:
            for name in (SERVICE_NAME, ""):
                health_servicer.set(name, state)
            log.info(
                "grpc_health state=%s", health_pb2.HealthCheckResponse.ServingStatus.Name(state)
            )
            last = state
        stop.wait(2.0)


def build_server(
    settings: Settings, serving: Serving
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A server with the FeatureStore, health and reflection services, bound but not started."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_FeatureStoreServicer_to_server(FeatureStoreServicer(serving), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    return server, port, health_servicer


def sync_models_at_start(settings: Settings) -> None:
    """Ask the DuckDB service to sync production models; beat retries if it cannot now."""
    app = configure(settings)
    try:
        report = app.send_task(constants.TASK_SYNC_MODELS, queue=settings.read_queue).get(
            timeout=settings.query_timeout_s
        )
        log.info("startup_model_sync served=%s", ",".join(report["served"]) or "-")
    except Exception as exc:  # noqa: BLE001 - start serving anyway; beat syncs later
        metrics.FAILURES.labels("grpc", "startup_model_sync").inc()
        log.warning("startup_model_sync_failed error=%s", type(exc).__name__)


def run_grpc(settings: Settings) -> None:
    """Serve until SIGTERM."""
    services.ensure_redis(settings)
    metrics.serve(settings.metrics_port_grpc, "grpc")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    serving = Serving(redis.Redis.from_url(settings.redis_url, socket_timeout=5))
    server, port, health_servicer = build_server(settings, serving)
    server.start()
    threading.Thread(
        target=watch_health, args=(health_servicer, serving, stop), daemon=True
    ).start()
    log.info("grpc_start port=%d", port)
    threading.Thread(target=sync_models_at_start, args=(settings,), daemon=True).start()
    stop.wait()
    server.stop(grace=5).wait()
    log.info("grpc_stop")
