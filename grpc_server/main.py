"""Entry point of the gRPC server: servicers, health, reflection, model sync at start-up."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from featurestore import metrics, services
from featurestore.ingest.publisher import EventPublisher
from featurestore.reads.reader import Reader
from featurestore.serving.predict import Predictor
from featurestore.serving.prediction_log import PredictionSink
from featurestore.serving.runtime import ModelCache
from featurestore.serving.service import Serving
from featurestore.settings import Settings
from grpc_server.auth import server_credentials, server_interceptors
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.inference import SERVICE_NAME as INFERENCE_SERVICE_NAME
from grpc_server.inference import add_inference_service
from grpc_server.interceptor import MetricsInterceptor
from grpc_server.servicer import FeatureStoreServicer
from grpc_server.startup import Readiness, tune_interpreter
from tasks.app import configure

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FeatureStore"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The names the health service answers for: the server, and each service a probe may name
# (a probe of the inference service got NOT_FOUND).
HEALTH_NAMES = ("", SERVICE_NAME, INFERENCE_SERVICE_NAME)


def watch_health(
    health_servicer: health.HealthServicer,
    ready: Callable[[], bool],
    stop: threading.Event,
    interval_s: float = 0.5,
) -> None:
    """SERVING while ready() holds (first model sync done, Redis answering), NOT_SERVING
    otherwise; checked every interval_s."""
    last = None
    while not stop.is_set():
        try:
            serving = ready()
        except Exception:
            # A check that fails is not ready. Left to die, this thread would keep the last
            # state, SERVING, for good. Logged once per failing stretch, not every interval.
            if last != health_pb2.HealthCheckResponse.NOT_SERVING:
                log.exception("grpc_health_check_failed")
            serving = False
        state = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if state != last:
            for name in HEALTH_NAMES:
                health_servicer.set(name, state)
            log.info(
                "grpc_health state=%s", health_pb2.HealthCheckResponse.ServingStatus.Name(state)
            )
            last = state
        stop.wait(interval_s)


def build_server(
    settings: Settings,
    serving: Serving,
    models: ModelCache,
    ready: Callable[[], bool],
    *,
    reuse_port: bool = False,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A server with the FeatureStore, Open Inference Protocol, health and reflection
    services, bound but not started (health NOT_SERVING until watch_health says otherwise).
    reuse_port only for the processes of one group, which hold the port's lock."""
    limit = settings.grpc_max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        # The token check first: it decides per call, the metrics one caches per method.
        interceptors=[*server_interceptors(settings), MetricsInterceptor()],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # gRPC Python binds with SO_REUSEPORT by default: a second server on the same
            # port then starts without error and takes a share of the connections. A group
            # of processes (grpc_server/processes.py) keeps that out with a lock instead.
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    pb_grpc.add_FeatureStoreServicer_to_server(
        FeatureStoreServicer(serving, read_timeout_s=settings.query_timeout_s), server
    )
    health_servicer = health.HealthServicer()
    for name in HEALTH_NAMES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    inference = add_inference_service(
        server,
        models,
        ready,
        max_rows=settings.max_entities_per_call,
        predictions=serving.predictions,
    )
    names = [SERVICE_NAME, inference, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    return server, port, health_servicer


def build_serving(
    settings: Settings,
    client: redis.Redis,
    reader: Reader | None,
    publisher: EventPublisher | None,
    predictions: PredictionSink | None = None,
) -> tuple[Serving, ModelCache]:
    """The domain objects of one gRPC process: its model cache, predictor and Serving
    (which hands answered calls to `predictions`, the prediction log, when given)."""
    models = ModelCache(client, allow_pickle=settings.allow_pickle)
    predictor = Predictor(
        client,
        models,
        reader,
        max_entities=settings.max_entities_per_call,
        fallback_timeout_s=settings.query_timeout_s,
    )
    serving = Serving(
        client,
        max_entities=settings.max_entities_per_call,
        predictor=predictor,
        publisher=publisher,
        max_message_bytes=settings.max_message_bytes,
        predictions=predictions,
    )
    return serving, models


def start_background(
    settings: Settings,
    models: ModelCache,
    readiness: Readiness,
    health_servicer: health.HealthServicer,
    stop: threading.Event,
) -> list[threading.Thread]:
    """Threads of a running server: model refresh, start-up sync, health; until stop."""
    targets: list[tuple[Callable[..., None], tuple[object, ...]]] = [
        (models.run, (stop, settings.model_refresh_interval_s)),
        (readiness.sync_at_start, (configure(settings), settings.query_timeout_s, stop)),
        (watch_health, (health_servicer, readiness, stop)),
    ]
    threads = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]
    for thread in threads:
        thread.start()
    return threads


def run_grpc(
    settings: Settings,
    reader: Reader,
    publisher: EventPublisher,
    predictions: PredictionSink | None = None,
) -> None:
    """Serve until SIGTERM. The reader serves Predict's fallback reads, the publisher
    PushFeatures and `predictions` logs answered calls (all built by the caller, which
    owns their transports)."""
    tune_interpreter(settings)
    services.ensure_redis(settings)
    metrics.serve(settings.metrics_port_grpc, "grpc", settings.metrics_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    serving, models = build_serving(settings, client, reader, publisher, predictions)
    readiness = Readiness(serving, models)
    server, port, health_servicer = build_server(
        settings, serving, models, readiness, reuse_port=settings.grpc_processes > 1
    )
    server.start()
    log.info(
        "grpc_start port=%d tls=%s token=%s",
        port,
        settings.grpc_tls_cert is not None,
        settings.grpc_auth_token is not None,
    )
    start_background(settings, models, readiness, health_servicer, stop)
    stop.wait()
    server.stop(grace=5).wait()
    log.info("grpc_stop")
