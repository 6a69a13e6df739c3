"""Predict with the prediction log on and off, in one run of make bench-serve.

The demo's model is served twice, under its id and UNLOGGED_MODEL_ID, and the stack logs
only the first (prediction_log_models), so every other figure of the run is with logging on.
One gRPC process, one load at RATE, the two models in turn, so the machine's drift touches
both alike; what logging adds is the difference, in two ways:

- call by call (predict_logged_*): what a Predict itself pays for being logged;
- in one-second blocks (*_blocks_*): also the work logging causes right after (the log's
  thread, Kafka, the bridge, DuckDB's writes, all on the same cores here), which call by
  call falls on the unlogged call next to it as much.

Each difference comes with a 95% bootstrap interval (the arms resampled independently).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import numpy as np

from bench.common import percentile
from bench.load import open_loop
from bench.server_stats import group_samples
from demo import publish
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from tasks.app import configure
from tasks.client.query import query_table

log = logging.getLogger("bench.serve")

UNLOGGED_MODEL_ID = f"{publish.MODEL_ID}_unlogged"
RATE = 500
SECONDS = 40  # per comparison
BOOTSTRAP = 500
THREADS = 16
BLOCK_CALLS = RATE  # one second of calls to one model, then to the other
CALL_TIMEOUT_S = 2.0


def log_records(settings: Settings) -> dict[str, float]:
    """The gRPC processes' fstore_prediction_log_records_total, by outcome (summed over
    the processes of a group)."""
    counts: dict[str, float] = {}
    for sample in group_samples(settings, "fstore_prediction_log_records"):
        if sample.name.endswith("_total"):
            outcome = sample.labels["outcome"]
            counts[outcome] = counts.get(outcome, 0.0) + sample.value
    return counts


def logged_rows(settings: Settings) -> int:
    """Rows of prediction_log (only the logged model's calls are there)."""
    table = query_table(
        configure(settings), "SELECT count(*) AS n FROM prediction_log", None, timeout=60
    )
    return int(table.column("n")[0].as_py())


def _arms(
    stub: pb_grpc.FeatureStoreStub, ids: list[str], block: int
) -> tuple[dict[bool, list[float]], int]:
    """Latencies (ms) of the logged and unlogged arms, `block` calls to one, then the other."""
    rng = random.Random(3)
    latencies: dict[bool, list[float]] = {True: [], False: []}

    def call(i: int) -> None:
        logged = (i // block) % 2 == 1
        request = pb.PredictRequest(
            model_id=publish.MODEL_ID if logged else UNLOGGED_MODEL_ID,
            entity_ids=[rng.choice(ids)],
        )
        began = time.perf_counter()
        stub.Predict(request, timeout=CALL_TIMEOUT_S)
        # list.append is atomic: the load's threads share the two lists.
        latencies[logged].append((time.perf_counter() - began) * 1000)

    log.info("bench_logging rate=%d seconds=%d block=%d", RATE, SECONDS, block)
    return latencies, open_loop(call, RATE, SECONDS, THREADS).error_count


def _interval(arms: dict[bool, list[float]], q: float) -> list[float]:
    """A 95% bootstrap interval of logged minus unlogged quantile q."""
    logged, unlogged = np.asarray(arms[True]), np.asarray(arms[False])
    rng = np.random.default_rng(5)
    diffs = [
        np.quantile(rng.choice(logged, logged.size), q)
        - np.quantile(rng.choice(unlogged, unlogged.size), q)
        for _ in range(BOOTSTRAP)
    ]
    low, high = np.quantile(diffs, [0.025, 0.975])
    return [round(float(low), 3), round(float(high), 3)]


def logging_on_off(
    settings: Settings, stub: pb_grpc.FeatureStoreStub, ids: list[str]
) -> dict[str, Any]:
    """Both comparisons (call by call, then in blocks); then every record of the run so
    far delivered, dropped, and in DuckDB (exactly once: rows equal to delivered)."""
    out: dict[str, Any] = {"predict_logging_errors": 0}
    for block, suffix in ((1, ""), (BLOCK_CALLS, "_blocks")):
        arms, errors = _arms(stub, ids, block)
        out["predict_logging_errors"] += errors
        for logged, name in ((True, "predict_logged"), (False, "predict_unlogged")):
            out[f"{name}{suffix}_p50_ms"] = percentile(arms[logged], 0.5)
            out[f"{name}{suffix}_p99_ms"] = percentile(arms[logged], 0.99)
            out[f"{name}{suffix}_calls"] = len(arms[logged])
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            out[f"predict_logging_added{suffix}_{label}_ms"] = (
                out[f"predict_logged{suffix}_{label}_ms"]
                - out[f"predict_unlogged{suffix}_{label}_ms"]
            )
            out[f"predict_logging_added{suffix}_{label}_ci95_ms"] = _interval(arms, q)
    # Until DuckDB holds what Kafka confirmed (the bridge writes prediction batches 2 s old).
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
