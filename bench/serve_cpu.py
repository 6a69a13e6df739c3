"""python -m bench.serve_cpu: the gRPC server's CPU per call, in a process of its own.

The demo's model and 10k applicants in a Redis of its own (as bench.serve_profile), a
server built with grpc_server.main.build_server in a child process, and this process as
the client: closed loops of health Check (the floor: gRPC's own cost per call), Predict for
1 entity, Predict for 100 entities and GetOnlineFeatures of 10 features of 100 entities,
taking turns, each kind's CPU time of the server
process (user + system, from /proc) divided by its calls. CPU per call, unlike latency,
barely moves with the load of other processes on the machine. The last line of output is
one JSON object.

`--profile FILE` writes a cProfile of every thread of the server (its Python part only, on
the thread CPU clock); `--breakdown` prints the thread CPU of the parts of a Predict (the
handler, Predictor.predict, its online read and parse, the Redis call, ONNX, the protobuf
response) by number of entities.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import json
import os
import pstats
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psutil
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import bench_settings, percentile
from bench.serve_profile import load
from demo import data
from featurestore.logs import setup_logging
from featurestore.services import RedisService
from featurestore.serving import predict, runtime, service
from featurestore.settings import Settings
from featurestore.store import online
from grpc_server import convert, servicer
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.main import build_server, build_serving
from grpc_server.startup import Readiness

MODEL_ID = "credit_risk_v1"
# Shifted like bench_settings' ports, so that two runs side by side use two Redis servers.
REDIS_URL = f"redis://localhost:{7397 + int(os.environ.get('FSTORE_BENCH_PORT_OFFSET', '0'))}/0"
ENTITIES = 10_000
CALLS = {"health": 3000, "predict_1": 3000, "predict_100": 300, "features_100": 300}
ROUNDS = 3
THREADS = 4


def _settings(folder: Path) -> Settings:
    return bench_settings(folder, redis_url=REDIS_URL, grpc_host="localhost", grpc_port=0)


def serve(folder: Path, profile: str | None, breakdown: bool) -> None:
    """The child: build_server on the bench Redis, print its port, serve until SIGTERM."""
    profiles: list[cProfile.Profile] = []
    if breakdown:
        _breakdown()
    if profile:
        _profile_threads(profiles)
    settings = _settings(folder)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    serving, models = build_serving(settings, client, None, None)
    models.refresh()
    server, port, _health = build_server(settings, serving, models, Readiness(serving, models))
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    print(port, flush=True)
    stop.wait()
    server.stop(grace=None).wait()
    if profile:
        stats = pstats.Stats(profiles[0])
        for other in profiles[1:]:
            stats.add(other)
        stats.dump_stats(profile)


def _breakdown() -> None:
    """Thread CPU of the parts of each Predict, by part and number of entities, printed to
    stderr when the server exits (each timed part costs one more thread-clock read)."""
    acc: dict[str, list[float]] = {}

    def timed(owner: Any, name: str, label: str, size: Any) -> None:
        original = getattr(owner, name, None)
        if original is None:  # a part that this version of the code does not have
            return

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return original(*a, **k)
            finally:
                v = acc.setdefault(f"{label}_{size(a)}", [0.0, 0])
                v[0] += time.thread_time() - t
                v[1] += 1

        setattr(owner, name, wrapper)

    timed(servicer.FeatureStoreServicer, "Predict", "handler", lambda a: len(a[1].entity_ids))
    timed(
        servicer.FeatureStoreServicer,
        "GetOnlineFeatures",
        "features_handler",
        lambda a: len(a[1].entity_ids),
    )
    timed(predict.Predictor, "predict", "predictor", lambda a: len(a[2]))
    timed(predict.Predictor, "_online", "online", lambda a: len(a[2]))
    timed(online.OnlineStore, "fields", "fetch", lambda a: len(a[1]))
    timed(convert, "predict_response", "to_protobuf", lambda a: len(a[0].predictions))
    timed(runtime.LoadedModel, "infer", "infer", lambda a: len(a[1]))
    timed(service.Serving, "online_features_many", "features_read", lambda a: len(a[1]))
    # Its argument is a list of entities in older trees, an object with entity_ids now.
    timed(
        convert,
        "online_response",
        "features_to_protobuf",
        lambda a: len(getattr(a[0], "entity_ids", a[0])),
    )

    def report() -> None:
        for key, (seconds, calls) in sorted(acc.items()):
            print(
                f"breakdown {key} calls={calls} cpu_us={seconds / calls * 1e6:.1f}", file=sys.stderr
            )

    atexit.register(report)


def _profile_threads(profiles: list[cProfile.Profile]) -> None:
    """Every thread started from now on runs under a cProfile of its own."""
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profiler = cProfile.Profile(time.thread_time)
        profiles.append(profiler)
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()

    threading.Thread.run = run  # type: ignore[method-assign]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def drive(call: Callable[[int], object], calls: int, threads: int) -> list[float]:
    """calls calls from `threads` threads back to back; their latencies (ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(calls))

    def worker() -> None:
        mine = []
        for i in counter:
            began = time.perf_counter()
            call(i)
            mine.append((time.perf_counter() - began) * 1000)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies


def measure(port: int, server: psutil.Process, ids: list[str]) -> dict[str, Any]:
    """CPU ms of the server per call, and latency p50, of each kind, over ROUNDS turns."""
    channel = grpc.insecure_channel(f"localhost:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = pb_grpc.FeatureStoreStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    rng = random.Random(5)
    check = health_pb2.HealthCheckRequest()
    one = [pb.PredictRequest(model_id=MODEL_ID, entity_ids=[rng.choice(ids)]) for _ in range(997)]
    many = [
        pb.PredictRequest(model_id=MODEL_ID, entity_ids=rng.sample(ids, 100)) for _ in range(97)
    ]
    features = [
        pb.GetOnlineFeaturesRequest(entity_ids=r.entity_ids, feature_names=data.FEATURE_NAMES)
        for r in many
    ]
    kinds: dict[str, Callable[[int], object]] = {
        "health": lambda _i: health.Check(check, timeout=5),
        "predict_1": lambda i: stub.Predict(one[i % len(one)], timeout=5),
        "predict_100": lambda i: stub.Predict(many[i % len(many)], timeout=5),
        "features_100": lambda i: stub.GetOnlineFeatures(features[i % len(features)], timeout=5),
    }
    for call in kinds.values():  # warm-up
        drive(call, 50, THREADS)
    cpu: dict[str, float] = dict.fromkeys(kinds, 0.0)
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(ROUNDS):
        for name, call in kinds.items():
            before = _cpu(server)
            latencies[name] += drive(call, CALLS[name], THREADS)
            cpu[name] += _cpu(server) - before
    channel.close()
    out: dict[str, Any] = {}
    for name in kinds:
        out[f"{name}_server_cpu_ms"] = cpu[name] * 1000 / (CALLS[name] * ROUNDS)
        out[f"{name}_p50_ms"] = percentile(latencies[name], 0.5)
    out["load_average"] = os.getloadavg()[0]
    return out


def main() -> None:
    """Start Redis and the server child, measure, print the JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve), args.profile, args.breakdown)
        return
    setup_logging("WARNING")
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-cpu-"))
    settings = _settings(folder)
    service = RedisService(settings)
    started = service.ensure().started
    try:
        client = redis.Redis.from_url(settings.redis_url)
        credit = data.generate(ENTITIES, prefix="c_")
        load(client, credit)
        command = [sys.executable, "-m", "bench.serve_cpu", "--serve", str(folder)]
        if args.profile:
            command += ["--profile", args.profile]
        if args.breakdown:
            command.append("--breakdown")
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            result = measure(port, psutil.Process(child.pid), credit.entity_ids)
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
    finally:
        if started:
            service.stop()
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(45)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
