"""make bench-prediction-log: what the prediction log costs a serving process, in-process.

Predictor.predict for one entity, alone and followed by log_predict of the gRPC process's
sink (bridge.prediction_publisher.KafkaPredictionLog, its thread running; the broker's
address answers nothing, so records stay in the producer's queue): the serving call's own
cost and the GIL the log's thread takes from it, without gRPC, Kafka, the bridge or DuckDB
on the cores. Rounds take turns. Needs only Redis (bench-predict's, on a port moved by
FSTORE_BENCH_PORT_OFFSET). Also the CPU the log's thread spent per record (its thread CPU
clock). Last line: JSON.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import redis

from bench.common import bench_settings, percentile
from bench.predict_inprocess import ENTITIES, MODEL_ID, _load
from bridge.prediction_publisher import KafkaPredictionLog
from featurestore.logs import setup_logging
from featurestore.services import RedisService
from featurestore.serving.predict import Predictor
from featurestore.serving.runtime import ModelCache

ROUNDS = 10
CALLS = 2000  # per case and round
REDIS_PORT = 7389 + int(os.environ.get("FSTORE_BENCH_PORT_OFFSET", "0"))


def thread_cpu_s(thread: threading.Thread) -> float:
    """CPU seconds a running thread of this process has used (its own clock, in ns)."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def interval(a: list[float], b: list[float], q: float, resamples: int = 500) -> list[float]:
    """A 95% bootstrap interval of quantile q of a minus that of b."""
    rng = np.random.default_rng(5)
    xa, xb = np.asarray(a), np.asarray(b)
    diffs = [
        np.quantile(rng.choice(xa, xa.size), q) - np.quantile(rng.choice(xb, xb.size), q)
        for _ in range(resamples)
    ]
    return [round(float(v), 3) for v in np.quantile(diffs, [0.025, 0.975])]


def main() -> None:
    """Run the rounds and print the figures; the last line is JSON."""
    setup_logging("WARNING")
    settings = bench_settings(
        Path(tempfile.mkdtemp(prefix="bench-plog-")), redis_url=f"redis://localhost:{REDIS_PORT}/0"
    )
    service = RedisService(settings)
    started = service.ensure().started
    nowhere = settings.model_copy(
        update={"kafka_bootstrap": "localhost:1", "prediction_log_buffer": 1_000_000}
    )
    # The sink as the gRPC process runs it; one taking 8 calls per step; one never yielding;
    # one call per step (sleeping after each, as the publisher did before).
    sinks = {
        "logged": KafkaPredictionLog(nowhere),
        "logged_1_per_step": KafkaPredictionLog(nowhere, calls_per_step=1),
        "logged_8_per_step": KafkaPredictionLog(nowhere, calls_per_step=8),
        "logged_no_yield": KafkaPredictionLog(nowhere, calls_per_step=32, yield_s=0),
    }
    try:
        client = redis.Redis.from_url(settings.redis_url)
        _load(client)
        models = ModelCache(client, allow_pickle=False)
        models.refresh()
        predictor = Predictor(client, models, None, max_entities=1000, fallback_timeout_s=5)
        for sink in sinks.values():
            sink.start()
        rng = random.Random(2)
        samples: dict[str, list[float]] = {"plain": [], **{name: [] for name in sinks}}
        publisher_cpu_s = dict.fromkeys(sinks, 0.0)
        records = 0
        for round_index in range(ROUNDS + 1):
            for name in samples:
                taken = []
                logging_to = sinks.get(name)
                if logging_to is not None:
                    cpu_before = thread_cpu_s(logging_to._thread)
                for i in range(CALLS):
                    entity = f"bench_e{rng.randrange(ENTITIES)}"
                    began = time.perf_counter_ns()
                    result = predictor.predict(MODEL_ID, [entity])
                    if logging_to is not None:
                        logging_to.log_predict(f"r{i}", result)
                    taken.append((time.perf_counter_ns() - began) / 1e6)
                if logging_to is not None:
                    # Wait for the thread to move what is buffered; then it only polls.
                    while len(logging_to.buffer) or logging_to._pending:
                        time.sleep(0.01)
                    if round_index:
                        publisher_cpu_s[name] += thread_cpu_s(logging_to._thread) - cpu_before
                if round_index:  # the first round warms up
                    samples[name] += taken
            records += CALLS * bool(round_index)  # one entity each
        figures: dict[str, float] = {}
        for name, values in samples.items():
            for q in (0.5, 0.99):
                figures[f"predict_{name}_p{round(q * 100)}_ms"] = round(percentile(values, q), 4)
        intervals: dict[str, list[float]] = {}
        for name in sinks:
            for label in ("p50", "p99"):
                added = figures[f"predict_{name}_{label}_ms"] - figures[f"predict_plain_{label}_ms"]
                figures[f"{name}_added_{label}_ms"] = round(added, 4)
            intervals[f"{name}_added_p99_ci95_ms"] = interval(samples[name], samples["plain"], 0.99)
        # The thread's CPU while its case ran and drained (idle polls included).
        for name, spent in publisher_cpu_s.items():
            key = "publisher" if name == "logged" else f"{name}_publisher"
            figures[f"{key}_cpu_us_per_record"] = round(spent / records * 1e6, 3)
        for key, value in {**figures, **intervals}.items():
            print(f"{key:<36} {value}")
        print(json.dumps({**figures, **intervals}))
    finally:
        for sink in sinks.values():
            sink.close(timeout_s=0)
            sink.producer.purge()
        if started:
            service.stop()


if __name__ == "__main__":
    main()
