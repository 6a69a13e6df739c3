"""ModelInfer (Open Inference Protocol) for one row over loopback, against ServerLive as the
floor: a real grpc.server in this process, the model served from Redis by a ModelCache.

Run: `.venv/bin/python -m bench.oip_infer` (starts its own Redis on port 7879 unless one
answers there). Calls alternate between the kinds in each round, so that load from other
processes hits all alike. Last line: one JSON object of p50/p99 in ms per kind.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import redis

from bench.common import bench_settings, percentile
from featurestore.services import RedisService
from featurestore.serving.runtime import ModelCache
from grpc_server.generated import grpc_predict_v2_pb2 as oip
from grpc_server.generated import grpc_predict_v2_pb2_grpc as oip_grpc
from grpc_server.inference import add_inference_service
from tests.serving.onnx_models import linear_classifier, publish_model, scaler_json

ROUNDS = 5
CALLS = 1000
WARMUP = 300
FEATURES = [
    ("debt_to_income_ratio", "float"),
    ("age_years", "int"),
    ("annual_income", "float"),
    ("open_accounts", "int"),
    ("late_payments_12m", "int"),
    ("has_mortgage", "bool"),
]
ROW = [0.31, 41.0, 52000.0, 4.0, 1.0, 1.0]


def _requests() -> dict[str, object]:
    typed64 = oip.ModelInferRequest(model_name="bench_oip")
    typed64.inputs.add(name="input", datatype="FP64", shape=[1, 6]).contents.fp64_contents.extend(
        ROW
    )
    typed32 = oip.ModelInferRequest(model_name="bench_oip")
    typed32.inputs.add(name="input", datatype="FP32", shape=[1, 6]).contents.fp32_contents.extend(
        ROW
    )
    raw32 = oip.ModelInferRequest(model_name="bench_oip")
    raw32.inputs.add(name="input", datatype="FP32", shape=[1, 6])
    raw32.raw_input_contents.append(np.asarray(ROW, dtype="<f4").tobytes())
    return {
        "floor_server_live": oip.ServerLiveRequest(),
        "infer_fp64": typed64,
        "infer_fp32": typed32,
        "infer_raw_fp32": raw32,
    }


def measure(port: int) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) of each kind of call, sequential on one channel."""
    samples: dict[str, list[float]] = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        requests = _requests()
        calls: dict[str, Callable[[object], object]] = {
            name: stub.ServerLive if name.startswith("floor") else stub.ModelInfer
            for name in requests
        }
        for _ in range(WARMUP):
            for name, request in requests.items():
                calls[name](request)
        for _ in range(ROUNDS):
            for _ in range(CALLS):
                for name, request in requests.items():
                    began = time.perf_counter()
                    calls[name](request)
                    samples.setdefault(name, []).append((time.perf_counter() - began) * 1e3)
    return {
        name: {
            "p50_ms": round(percentile(values, 0.5), 4),
            "p99_ms": round(percentile(values, 0.99), 4),
        }
        for name, values in samples.items()
    }


def model_only(models: ModelCache) -> dict[str, float]:
    """LoadedModel.infer alone on one row (casts, scaler, ONNX Runtime), for comparison."""
    model = models.get("bench_oip")
    row = np.asarray([ROW])
    values = []
    for _ in range(ROUNDS * CALLS):
        began = time.perf_counter()
        model.infer(row)
        values.append((time.perf_counter() - began) * 1e3)
    return {
        "p50_ms": round(percentile(values, 0.5), 4),
        "p99_ms": round(percentile(values, 0.99), 4),
    }


def main() -> None:
    """Serve one model, measure, print the JSON line."""
    with tempfile.TemporaryDirectory() as state:
        settings = bench_settings(Path(state), redis_url="redis://localhost:7879/0")
        service = RedisService(settings)
        status = service.ensure()
        try:
            client = redis.Redis.from_url(settings.redis_url)
            onnx = linear_classifier(6, [0.8, -0.02, -0.3, 0.1, 0.6, -0.4], 0.1)
            mean = [0.3, 40.0, 50000.0, 4.0, 1.0, 0.5]
            scale = [0.2, 12.0, 20000.0, 2.0, 1.0, 0.5]
            publish_model(
                client,
                "bench_oip",
                "1",
                {"onnx": onnx, "json": scaler_json(mean, scale)},
                FEATURES,
            )
            models = ModelCache(client, allow_pickle=False)
            models.refresh()
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
            add_inference_service(server, models, lambda: True)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            try:
                result: dict[str, dict[str, float]] = measure(port)
            finally:
                server.stop(grace=None)
            result["model_infer_in_process"] = model_only(models)
            client.delete("prod_models", "model_manifest:bench_oip", "model:bench_oip:onnx")
            client.delete("model:bench_oip:json")
        finally:
            if status.started:
                service.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
