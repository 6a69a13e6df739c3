"""make bench-serve: Predict over gRPC on 100k entities in the online store.

Measures, in one run: Predict for one entity at a steady 500 requests/s for 30 s (open loop)
and the highest rate with zero errors (the rate stepped up until errors or the rate is
missed), both from ghz (bench.ghz, a Go client) and again from Python threads (`_pyclient`);
ModelInfer (KServe v2) for one row; Predict for 100 entities; and a floor, the health
Check, measured in turn with the single calls; Predict with the prediction log on and off
(bench.serve_logging: the demo's model is logged, a twin of it is not). The model is the
demo's (demo.model), the features go through Kafka with the file producer. The last line of
output is one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import ghz
from bench.common import bench_settings, now, percentile, running_stack, settle
from bench.load import Call, closed_loop, open_loop, ramp
from bench.serve_logging import UNLOGGED_MODEL_ID, logging_on_off
from bench.serve_table import table
from bench.server_stats import CpuMeter, predict_buckets
from bridge.producer import FileProducer
from demo import client, data, model, publish
from featurestore.constants import online_feature_key
from featurestore.logs import setup_logging
from featurestore.progress import Progress
from featurestore.settings import Settings
from grpc_server.auth import client_channel
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.generated import grpc_predict_v2_pb2 as oip
from grpc_server.generated import grpc_predict_v2_pb2_grpc as oip_grpc
from tasks.app import configure

log = logging.getLogger("bench.serve")

ENTITIES = 100_000
PREFIX = "cust_"
STEADY_RATE = 500
STEADY_SECONDS = 30
RAMP_START, RAMP_STEP, RAMP_SECONDS = 500, 250, 4
SAMPLES = 1000
FLOOR_RATE = 50
BATCH = 100
THREADS = 16
CALL_TIMEOUT_S = 2.0
TARGETS = {
    "predict_p50_ms": 1.5,
    "predict_p99_ms": 4.0,
    "predict_errors": 0,
    "max_rps_no_errors": 1000,
    "predict_batch100_p50_ms": 5.0,
    "predict_logging_added_p99_ms": 0.3,
}


def load_features(settings: Settings, folder: Path) -> data.CreditData:
    """ENTITIES applicants' features through Kafka; returns once all are in the online store."""
    credit = data.generate(ENTITIES, prefix=PREFIX)
    path = folder / "features.parquet"
    events = data.write_parquet(credit, path, dt.datetime.now(dt.UTC))
    began = now()
    FileProducer(settings, 1000).run([path])
    online = redis.Redis.from_url(settings.redis_url)
    width = len(data.FEATURE_NAMES)
    with Progress("online", ENTITIES, unit="entities") as progress:
        waiting = credit.entity_ids
        while waiting:
            pipe = online.pipeline(transaction=False)
            for entity in waiting:
                pipe.hlen(online_feature_key(entity))
            lengths = pipe.execute()
            still = [e for e, n in zip(waiting, lengths, strict=True) if n < width]
            progress.update(len(waiting) - len(still))
            waiting = still
            if waiting:
                if now() - began > 600:
                    raise TimeoutError(f"{len(waiting)} entities not online after 600 s")
                time.sleep(0.5)
    log.info("bench_features_online events=%d seconds=%.1f", events, now() - began)
    return credit


def publish_model(settings: Settings, credit: data.CreditData, folder: Path) -> model.Artifacts:
    """The demo's model trained on the data, published and served (and its unlogged twin)."""
    artifacts = model.export(model.train(credit))
    for model_id in (publish.MODEL_ID, UNLOGGED_MODEL_ID):
        etags = publish.upload(settings, model_id, artifacts)
        specs = publish.specs(settings, model_id, publish.VERSION, data.FEATURES)
        publish.register_and_promote(settings, configure(settings), specs, folder)
        channel, stub = client.connect(settings)
        with channel:
            client.wait_served(stub, model_id, publish.VERSION, etags)
            # Until the gRPC process has loaded it (its next model-cache refresh).
            shown = credit.entity_ids[:5]
            expected = model.InProcessModel(artifacts).scores(credit.rows(shown))
            served, _waited = client.predict_current(
                stub, model_id, shown, expected, tolerance=1e-5, timeout_s=30
            )
            if not np.allclose(served.scores, expected, rtol=0, atol=1e-5):
                raise RuntimeError("the served scores differ from the in-process ones")
    return artifacts


def infer_request(stub: oip_grpc.GRPCInferenceServiceStub, row: np.ndarray) -> Any:
    """A ModelInfer request for one row, shaped as ModelMetadata says."""
    meta = stub.ModelMetadata(oip.ModelMetadataRequest(name=publish.MODEL_ID))
    tensor = meta.inputs[0]
    request = oip.ModelInferRequest(model_name=publish.MODEL_ID)
    request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=[1, len(row)])
    contents = request.inputs[0].contents
    if tensor.datatype == "FP32":
        contents.fp32_contents.extend(row.astype(np.float32).tolist())
    else:
        contents.fp64_contents.extend(row.tolist())
    return request


def measure(settings: Settings, credit: data.CreditData, folder: Path) -> dict[str, Any]:
    """Every gRPC measurement: single calls on one channel, the rates from ghz and it."""
    ghz_client = ghz.Client(
        ghz.install(ghz.TOOLS),
        ghz.target(settings, client.address(settings), folder),
        folder, CALL_TIMEOUT_S, THREADS,
        int(os.environ.get("FSTORE_BENCH_GHZ_CONNECTIONS", "1")),
    )  # fmt: skip
    channel = client_channel(settings, client.address(settings))
    stub = pb_grpc.FeatureStoreStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    infer_stub = oip_grpc.GRPCInferenceServiceStub(channel)
    rng = random.Random(1)
    ids = credit.entity_ids

    def predict_one(_i: int) -> object:
        request = pb.PredictRequest(model_id=publish.MODEL_ID, entity_ids=[rng.choice(ids)])
        return stub.Predict(request, timeout=CALL_TIMEOUT_S)

    def predict_batch(_i: int) -> object:
        request = pb.PredictRequest(model_id=publish.MODEL_ID, entity_ids=rng.sample(ids, BATCH))
        return stub.Predict(request, timeout=CALL_TIMEOUT_S)

    # The same on the unlogged twin, in a loop of its own after the others (a logged call's
    # records are encoded, bridged and written to DuckDB after it returns, on the same
    # 2 cores: taken in turn, that work would land on the unlogged calls).
    def predict_batch_unlogged(_i: int) -> object:
        request = pb.PredictRequest(model_id=UNLOGGED_MODEL_ID, entity_ids=rng.sample(ids, BATCH))
        return stub.Predict(request, timeout=CALL_TIMEOUT_S)

    check = health_pb2.HealthCheckRequest(service="")
    calls: dict[str, Call] = {
        "floor": lambda _i: health.Check(check, timeout=CALL_TIMEOUT_S),
        "predict_closed": predict_one,
        "predict_batch100": predict_batch,
    }
    try:
        one_row = infer_request(infer_stub, credit.features[0])
        calls["infer"] = lambda _i: infer_stub.ModelInfer(one_row, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
            raise
        log.warning("bench_infer_skipped reason=%s", "the server has no KServe v2 service")
    log.info("bench_closed_loop samples=%d kinds=%s", SAMPLES, ",".join(calls))
    samples = closed_loop(calls, SAMPLES)
    unlogged = {
        "predict_batch100_unlogged": predict_batch_unlogged,
        "floor_beside_unlogged": calls["floor"],
    }
    samples.update(closed_loop(unlogged, SAMPLES // 2))
    out: dict[str, Any] = {}
    for name, values in samples.items():
        out[f"{name}_p50_ms"] = percentile(values, 0.5)
        out[f"{name}_p99_ms"] = percentile(values, 0.99)
    # The closed loop's 100-entity calls left ~100k records for the log's downstream.
    out["settle_before_steady_s"] = settle(settings)
    out.update(steady_runs(settings, ghz_client, predict_one, calls["floor"], ids))
    out.update(logging_on_off(settings, stub, ids))
    log.info("bench_ramp_start clients=ghz,python start=%d step=%d", RAMP_START, RAMP_STEP)
    out["max_rps_no_errors"], out["ramp"] = ramp(
        lambda rate: ghz_client.predict(publish.MODEL_ID, ids, rate, RAMP_SECONDS),
        RAMP_START, RAMP_STEP, "ghz",
    )  # fmt: skip
    out["max_rps_no_errors_pyclient"], out["ramp_pyclient"] = ramp(
        lambda rate: open_loop(predict_one, rate, RAMP_SECONDS, THREADS * 2),
        RAMP_START, RAMP_STEP, "python",
    )  # fmt: skip
    # The same ramp read with the latency target too: the rate this server sustains well.
    out["max_rps_p99_under_4ms"] = max(
        (
            s["rate"]
            for s in out["ramp"]
            if not s["errors"] and s["p99_ms"] <= 4.0 and s["achieved_rps"] >= 0.97 * s["rate"]
        ),
        default=0,
    )
    channel.close()
    return out


def steady_runs(
    settings: Settings, go: ghz.Client, predict_one: Call, floor_call: Call, ids: list[str]
) -> dict[str, Any]:
    """Predict for one entity at STEADY_RATE and the floor beside it at FLOOR_RATE, from
    ghz (the headline figures) and from this process's threads (`_pyclient`): ghz first,
    or the threads first with FSTORE_BENCH_SERVE_PYTHON_FIRST=1 (runs taken in both orders
    tell the client from the drift of a shared machine)."""
    runs: list[Callable[[], dict[str, Any]]] = [
        lambda: steady_ghz(settings, go, ids),
        lambda: steady_python(settings, predict_one, floor_call),
    ]
    if os.environ.get("FSTORE_BENCH_SERVE_PYTHON_FIRST") == "1":
        runs.reverse()
    return {k: v for run in runs for k, v in run().items()}


def steady_ghz(settings: Settings, go: ghz.Client, ids: list[str]) -> dict[str, Any]:
    """The steady run from ghz, with the server's CPU and its own Predict time."""
    log.info("bench_steady client=ghz rate=%d seconds=%d", STEADY_RATE, STEADY_SECONDS)
    before = predict_buckets(settings, publish.MODEL_ID)
    with CpuMeter(settings) as cpu:
        steady, floor = go.steady_with_floor(
            publish.MODEL_ID, ids, STEADY_RATE, STEADY_SECONDS, FLOOR_RATE
        )
    after = predict_buckets(settings, publish.MODEL_ID)
    out: dict[str, Any] = steady.summary("predict")
    out["predict_error_codes"] = dict(steady.errors)
    out["floor_under_load_p50_ms"] = percentile(floor.latencies_ms, 0.5)
    out["floor_under_load_p99_ms"] = percentile(floor.latencies_ms, 0.99)
    # Where the CPU went, per request: the client (both ghz processes, their start-up and
    # JSON report included), the gRPC server, Redis (2 cores shared).
    out["cpu_ms_per_predict_client"] = (steady.cpu_s + floor.cpu_s) * 1000 / steady.planned
    for name in ("grpc", "redis"):
        out[f"cpu_ms_per_predict_{name}"] = cpu.seconds[name] * 1000 / steady.planned
    # The server's own time of each Predict (Predictor.predict, from its histogram): how
    # much of the tail is the domain work, and how much transport and scheduling.
    total = after["+Inf"] - before.get("+Inf", 0.0)
    for bound in ("0.001", "0.0025", "0.005"):
        over = total - (after[bound] - before.get(bound, 0.0))
        out[f"server_predict_over_{float(bound) * 1000:g}ms_share"] = over / total if total else 0
    return out


def steady_python(settings: Settings, predict_one: Call, floor_call: Call) -> dict[str, Any]:
    """The steady run from this process's threads (`_pyclient` keys)."""
    log.info("bench_steady client=python rate=%d seconds=%d", STEADY_RATE, STEADY_SECONDS)
    out: dict[str, Any] = {}
    with ThreadPoolExecutor(1) as beside, CpuMeter(settings) as cpu:
        floor_py = beside.submit(open_loop, floor_call, FLOOR_RATE, STEADY_SECONDS, 2)
        steady_py = open_loop(predict_one, STEADY_RATE, STEADY_SECONDS, THREADS)
    out.update(steady_py.summary("predict_pyclient"))
    out["floor_under_load_pyclient_p50_ms"] = percentile(floor_py.result().latencies_ms, 0.5)
    out["floor_under_load_pyclient_p99_ms"] = percentile(floor_py.result().latencies_ms, 0.99)
    out["cpu_ms_per_predict_pyclient"] = cpu.seconds["client"] * 1000 / steady_py.planned
    out["cpu_ms_per_predict_grpc_pyclient"] = cpu.seconds["grpc"] * 1000 / steady_py.planned
    return out


def main() -> None:
    """Run every measurement, print the table, and the JSON summary last."""
    setup_logging("WARNING")
    for name in ("bench", "featurestore.progress"):
        logging.getLogger(name).setLevel(logging.INFO)
    folder = Path(tempfile.mkdtemp(prefix="fstore-bench-serve-"))
    settings = bench_settings(folder / "state", prediction_log_models=[publish.MODEL_ID])
    try:
        with running_stack(settings):
            credit = load_features(settings, folder)
            settled_s = settle(settings)
            log.info("bench_settled seconds=%.1f", settled_s)
            publish_model(settings, credit, folder)
            result = {**measure(settings, credit, folder), "settle_s": settled_s}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "entities": ENTITIES,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()},
    }
    result["targets_met"] = {
        name: result[name] <= bound if name != "max_rps_no_errors" else result[name] >= bound
        for name, bound in TARGETS.items()
    }
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
