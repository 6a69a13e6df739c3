"""Predict with the prediction log on and off, in one run of make bench-serve.

The demo's model is served twice, under its id and UNLOGGED_MODEL_ID, and the stack logs
only the first (prediction_log_models), so every other figure of the run is with logging on:
one gRPC process, one load, calls taking the two models in turn, so the machine's drift
touches both alike. What logging adds is the difference.
"""

from __future__ import annotations

import logging
import random
import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.common import percentile
from bench.load import open_loop
from demo import publish
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from tasks.app import configure
from tasks.client.query import query_table

log = logging.getLogger("bench.serve")

UNLOGGED_MODEL_ID = f"{publish.MODEL_ID}_unlogged"
RATE = 500
SECONDS = 60
THREADS = 16
CALL_TIMEOUT_S = 2.0


def log_records(settings: Settings) -> dict[str, float]:
    """The gRPC process's fstore_prediction_log_records_total, by outcome."""
    url = f"http://localhost:{settings.metrics_port_grpc}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "fstore_prediction_log_records"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def logged_rows(settings: Settings) -> int:
    """Rows of prediction_log (only the logged model's calls are there)."""
    table = query_table(
        configure(settings), "SELECT count(*) AS n FROM prediction_log", None, timeout=60
    )
    return int(table.column("n")[0].as_py())


def logging_on_off(
    settings: Settings, stub: pb_grpc.FeatureStoreStub, ids: list[str]
) -> dict[str, Any]:
    """Predict for one entity at RATE for SECONDS, odd calls to the logged model: each
    one's p50/p99 and what logging added; then every record of the run so far delivered,
    dropped, and in DuckDB (exactly once: rows equal to delivered)."""
    rng = random.Random(3)
    latencies: dict[bool, list[float]] = {True: [], False: []}

    def call(i: int) -> None:
        logged = i % 2 == 1
        request = pb.PredictRequest(
            model_id=publish.MODEL_ID if logged else UNLOGGED_MODEL_ID,
            entity_ids=[rng.choice(ids)],
        )
        began = time.perf_counter()
        stub.Predict(request, timeout=CALL_TIMEOUT_S)
        # list.append is atomic: the load's threads share the two lists.
        latencies[logged].append((time.perf_counter() - began) * 1000)

    log.info("bench_logging rate=%d seconds=%d unlogged=%s", RATE, SECONDS, UNLOGGED_MODEL_ID)
    run = open_loop(call, RATE, SECONDS, THREADS)
    out: dict[str, Any] = {}
    for logged, name in ((True, "predict_logged"), (False, "predict_unlogged")):
        out[f"{name}_p50_ms"] = percentile(latencies[logged], 0.5)
        out[f"{name}_p99_ms"] = percentile(latencies[logged], 0.99)
        out[f"{name}_calls"] = len(latencies[logged])
    for q in ("p50", "p99"):
        out[f"predict_logging_added_{q}_ms"] = (
            out[f"predict_logged_{q}_ms"] - out[f"predict_unlogged_{q}_ms"]
        )
    out["predict_logging_errors"] = run.error_count
    # Until DuckDB holds what Kafka confirmed (the bridge writes every half second).
    deadline = time.monotonic() + 120
    while True:
        records, rows = log_records(settings), logged_rows(settings)
        if rows >= records.get("delivered", 0.0) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    out["prediction_log_delivered"] = records.get("delivered", 0.0)
    out["prediction_log_dropped"] = records.get("dropped_full", 0.0) + records.get(
        "dropped_undelivered", 0.0
    )
    out["prediction_log_rows"] = rows
    return out
