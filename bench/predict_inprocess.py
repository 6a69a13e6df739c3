"""make bench-predict: Predictor.predict in this process against its floor, a bare pipelined
HMGET of the same hashes, in one run (rounds take turns so that machine load hits all alike).

Needs only Redis (started on a port of its own if not running, stopped afterwards). Six
features per entity, a linear classifier with a JSON scaler. Last line: one JSON object.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import redis
from redis._parsers import _RESP3Parser
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from bench.common import bench_settings, percentile
from featurestore.constants import online_feature_key
from featurestore.logs import setup_logging
from featurestore.services import RedisService
from featurestore.serving.predict import Predictor
from featurestore.serving.runtime import ModelCache
from featurestore.store.online import OnlineStore
from tests.serving import onnx_models as om

log = logging.getLogger("bench.predict_inprocess")

ENTITIES = 10_000
FEATURES = [(f"feature_{i}", "int" if i == 1 else "float") for i in range(6)]
NAMES = [name for name, _ in FEATURES]
MODEL_ID = "bench_linear"
ROUNDS = 10
CALLS_1 = 1000
CALLS_100 = 100
REDIS_URL = "redis://localhost:7389/0"

Call = Callable[[list[str]], object]


def _load(client: redis.Redis) -> None:
    rng = random.Random(1)
    micros = 1_714_000_000_000_000
    online = OnlineStore(client)
    for start in range(0, ENTITIES, 1000):
        entities = [f"bench_e{i}" for i in range(start, start + 1000)]
        updates = [
            "".join(f"{n}\x1f{micros}\x1f{rng.uniform(0, 100):.3f}\x1f0\x1e" for n in NAMES)
            for _ in entities
        ]
        online.apply_updates(pa.table({"entity_id": entities, "updates": updates}))
    artifacts = {
        "onnx": om.linear_classifier(len(NAMES)),
        "json": om.scaler_json([50.0] * len(NAMES), [29.0] * len(NAMES)),
    }
    om.publish_model(client, MODEL_ID, "1.0.0", artifacts, FEATURES)


def _timed(call: Call, batches: list[list[str]]) -> list[float]:
    samples = []
    for batch in batches:
        start = time.perf_counter_ns()
        call(batch)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def _calls(client: redis.Redis) -> tuple[Call, Call]:
    """Predict through this client, and its floor: the same pipelined HMGETs alone."""
    models = ModelCache(client, allow_pickle=False)
    models.refresh()
    predictor = Predictor(client, models, None, max_entities=1000, fallback_timeout_s=5)

    def predict(entities: list[str]) -> object:
        return predictor.predict(MODEL_ID, entities)

    def floor(entities: list[str]) -> object:
        pipe = client.pipeline(transaction=False)
        for entity in entities:
            pipe.hmget(online_feature_key(entity), NAMES)
        return pipe.execute()

    return predict, floor


def main() -> None:
    """Run the rounds and print the figures; the last line is JSON."""
    setup_logging("WARNING")
    settings = bench_settings(Path(tempfile.mkdtemp(prefix="bench-predict-")), redis_url=REDIS_URL)
    service = RedisService(settings)
    started = service.ensure().started
    try:
        client = redis.Redis.from_url(settings.redis_url)
        _load(client)
        # The same calls with redis-py's pure-Python parser and packer: what hiredis saves.
        python_client = redis.Redis.from_url(
            settings.redis_url,
            parser_class=_RESP3Parser,
            command_packer=PythonRespSerializer(
                6000,
                Encoder("utf-8", "strict", False).encode,  # type: ignore[no-untyped-call]
            ),
        )
        predict, floor = _calls(client)
        predict_py, floor_py = _calls(python_client)
        rng = random.Random(2)
        cases = {
            "predict_1": (predict, 1, CALLS_1),
            "floor_1": (floor, 1, CALLS_1),
            "predict_100": (predict, 100, CALLS_100),
            "floor_100": (floor, 100, CALLS_100),
            "predict_100_pyparser": (predict_py, 100, CALLS_100),
            "floor_100_pyparser": (floor_py, 100, CALLS_100),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for round_index in range(ROUNDS + 1):
            for name, (call, size, calls) in cases.items():
                batches = [
                    [f"bench_e{rng.randrange(ENTITIES)}" for _ in range(size)] for _ in range(calls)
                ]
                taken = _timed(call, batches)
                if round_index:  # the first round warms up
                    samples[name] += taken
        figures: dict[str, float] = {}
        for name, values in samples.items():
            figures[f"{name}_p50_ms"] = round(percentile(values, 0.5), 4)
            figures[f"{name}_p99_ms"] = round(percentile(values, 0.99), 4)
            p50, p99 = figures[f"{name}_p50_ms"], figures[f"{name}_p99_ms"]
            print(f"{name:<22} p50 {p50:.3f} ms  p99 {p99:.3f} ms")
        for size in (1, 100):
            over = figures[f"predict_{size}_p50_ms"] - figures[f"floor_{size}_p50_ms"]
            figures[f"predict_{size}_over_floor_p50_ms"] = round(over, 4)
        print(json.dumps(figures))
    finally:
        if started:
            service.stop()


if __name__ == "__main__":
    main()
