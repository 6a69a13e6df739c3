"""python -m bench.serve_profile: where a Predict's time goes, step by step, in this process.

The demo's model and 10k applicants straight into a Redis of its own (no Kafka, no stack),
then, for 1 and 100 entities, each step of the server's work and the client's alone: the
pipelined HMGETs, Predictor.predict (which includes them), the protobuf response built from
its result, serialised and parsed back, the client reading the scores; and whole calls
through a gRPC server built in this process (health Check as the floor). Kinds take turns
so that machine load hits all alike. The last line of output is one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import bench_settings, percentile
from demo import data, model
from featurestore.constants import online_feature_key
from featurestore.logs import setup_logging
from featurestore.services import RedisService
from featurestore.store.online import OnlineStore
from grpc_server.convert import predict_response
from grpc_server.generated import featurestore_pb2 as pb
from tests.grpc_server.inprocess import Running, running_server
from tests.serving import onnx_models as om

ENTITIES = 10_000
MODEL_ID = "credit_risk_v1"
# Shifted like bench_settings' ports, so that two runs side by side use two Redis servers.
REDIS_URL = f"redis://localhost:{7399 + int(os.environ.get('FSTORE_BENCH_PORT_OFFSET', '0'))}/0"
ROUNDS = 400

Step = Callable[[list[str]], object]


def load(client: redis.Redis, credit: data.CreditData) -> None:
    """Every applicant's features into the online store, and the model into Redis."""
    micros = int(dt.datetime.now(dt.UTC).timestamp() * 1e6)
    packed = [
        "".join(
            f"{name}\x1f{micros}\x1f{value!r}\x1f0\x1e"
            for name, value in zip(data.FEATURE_NAMES, row.tolist(), strict=True)
        )
        for row in credit.features
    ]
    OnlineStore(client).apply_updates(pa.table({"entity_id": credit.entity_ids, "updates": packed}))
    artifacts = model.export(model.train(credit))
    features = [(f.name, f.type) for f in data.FEATURES]
    om.publish_model(
        client,
        MODEL_ID,
        "1.0.0",
        {"onnx": artifacts.onnx, "json": artifacts.scaler_json},
        features,
    )


def main() -> None:
    """Time every step; print a table and the JSON summary last."""
    setup_logging("WARNING")
    # Not model_copy: the settings' validation puts the Redis password into the URL.
    settings = bench_settings(
        Path(tempfile.mkdtemp(prefix="bench-serve-profile-")), redis_url=REDIS_URL
    )
    service = RedisService(settings)
    started = service.ensure().started
    try:
        client = redis.Redis.from_url(settings.redis_url)
        credit = data.generate(ENTITIES, prefix="p_")
        load(client, credit)
        with running_server(settings) as running:
            running.models.refresh()
            results = measure(client, running, credit)
    finally:
        if started:
            service.stop()
    print(f"{'STEP':<34}{'1 ENTITY p50 (ms)':>20}{'100 ENTITIES p50 (ms)':>24}")
    for name in STEPS:
        one, hundred = results[f"{name}_1_p50_ms"], results[f"{name}_100_p50_ms"]
        print(f"{name:<34}{one:>20.3f}{hundred:>24.3f}")
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))


STEPS = [
    "redis_hmget",
    "predictor",
    "infer",
    "to_protobuf",
    "serialize",
    "client_parse",
    "grpc_health_inprocess",
    "grpc_predict_inprocess",
]


def measure(client: redis.Redis, running: Running, credit: data.CreditData) -> dict[str, float]:
    """p50 and p99 of every step for 1 and 100 entities."""
    rng = random.Random(3)
    out: dict[str, float] = {}
    for n in (1, 100):
        batches = [rng.sample(credit.entity_ids, n) for _ in range(ROUNDS)]
        steps, size = _steps(client, running, credit, batches)
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for i, batch in enumerate(batches):
            for name, step in steps.items():
                began = time.perf_counter()
                step(i, batch)
                samples[name].append((time.perf_counter() - began) * 1000)
        for name, values in samples.items():
            warm = values[20:]
            out[f"{name}_{n}_p50_ms"] = percentile(warm, 0.5)
            out[f"{name}_{n}_p99_ms"] = percentile(warm, 0.99)
        out[f"response_{n}_bytes"] = float(size)
    return out


def _steps(
    client: redis.Redis, running: Running, credit: data.CreditData, batches: list[list[str]]
) -> tuple[dict[str, Callable[[int, list[str]], object]], int]:
    """Each step as a call of (round, entities), inputs prepared; the response's size."""
    predictor = running.serving.predictor
    assert predictor is not None
    loaded = running.models.get(MODEL_ID)
    health = health_pb2_grpc.HealthStub(running.channel)
    check = health_pb2.HealthCheckRequest()
    rows = [credit.rows(b) for b in batches]
    results = [predictor.predict(MODEL_ID, b) for b in batches]
    responses = [predict_response(r, "id") for r in results]
    wire = [r.SerializeToString() for r in responses]

    def hmget(_i: int, batch: list[str]) -> object:
        pipe = client.pipeline(transaction=False)
        for entity in batch:
            pipe.hmget(online_feature_key(entity), data.FEATURE_NAMES)
        return pipe.execute()

    def parse(i: int, _batch: list[str]) -> object:
        reply = pb.PredictResponse.FromString(wire[i])
        return [{o.name: list(o.values) for o in p.outputs} for p in reply.predictions]

    def grpc_predict(_i: int, batch: list[str]) -> object:
        request = pb.PredictRequest(model_id=MODEL_ID, entity_ids=batch)
        return running.stub.Predict(request, timeout=5)

    steps: dict[str, Callable[[int, list[str]], object]] = {
        "redis_hmget": hmget,
        "predictor": lambda _i, b: predictor.predict(MODEL_ID, b),
        "infer": lambda i, _b: loaded.infer(rows[i]),
        "to_protobuf": lambda i, _b: predict_response(results[i], "id"),
        "serialize": lambda i, _b: responses[i].SerializeToString(),
        "client_parse": parse,
        "grpc_health_inprocess": lambda _i, _b: health.Check(check, timeout=5),
        "grpc_predict_inprocess": grpc_predict,
    }
    return steps, len(wire[0])


if __name__ == "__main__":
    main()
