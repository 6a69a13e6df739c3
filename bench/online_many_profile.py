"""python -m bench.online_many_profile: where GetOnlineFeatures of 100 entities x 10 features
spends its time, step by step, in this process.

Entities shaped like `make bench-peers`' online rows (ten features, values with six decimals,
one event time each) straight into a Redis of its own (no Kafka, no stack); then each step
of the server's work and of the client's alone, and whole calls through a gRPC server built
in this process (health Check as the floor). Steps take turns so that machine load hits all
alike; CPU per step is the steadier figure on a shared machine. Then, as `make bench-peers`
times it, whole calls from this process to a server in a process of its own (built as the
stack's gRPC processes are, with their interpreter settings): p50, p99, the client's and the
server's CPU per call. The last line of output is one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil
import pyarrow as pa
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import bench_settings, percentile
from featurestore.logs import setup_logging
from featurestore.services import RedisService
from featurestore.settings import Settings
from featurestore.store.online import OnlineStore
from featurestore.store.online_grid import parse_grid
from grpc_server import convert
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.main import build_server, build_serving
from grpc_server.startup import Readiness, tune_interpreter
from tests.grpc_server.inprocess import Running, running_server

ENTITIES = 20_000
FEATURES = [f"feature_{k}" for k in range(10)]
# Shifted like bench_settings' ports, so that two runs side by side use two Redis servers.
REDIS_URL = f"redis://localhost:{7398 + int(os.environ.get('FSTORE_BENCH_PORT_OFFSET', '0'))}/0"
ROUNDS = int(os.environ.get("FSTORE_PROFILE_ROUNDS", "400"))
SERVER_PORT = 51097 + int(os.environ.get("FSTORE_BENCH_PORT_OFFSET", "0"))
WARM = 20

Step = Callable[[int, list[str]], object]


def load(client: redis.Redis) -> list[str]:
    """ENTITIES entities' ten features into the online store, as the write task stores them."""
    rng = random.Random(5)
    base = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1e6)
    ids = [f"cust_{i}" for i in range(ENTITIES)]
    packed = []
    for _ in ids:
        micros = base + rng.randrange(10**12)
        packed.append(
            "".join(
                f"{name}\x1f{micros}:{round(rng.random() * 100, 6)!r}:{micros + 7}\x1e"
                for name in FEATURES
            )
        )
    OnlineStore(client).apply_updates(pa.table({"entity_id": ids, "updates": packed}))
    return ids


def client_values(reply: pb.GetOnlineFeaturesResponse) -> dict[str, list[float | None]]:
    """What bench.peers_workloads.ours_features makes of a reply."""
    return {
        r.entity_id: [f.value if f.present else None for f in r.features] for r in reply.results
    }


def steps(running: Running, batches: list[list[str]]) -> dict[str, Step]:
    """Each step as a call of (round, entities), inputs prepared."""
    serving = running.serving
    online = serving.online
    fields = [online.fields(b, FEATURES) for b in batches]
    found = [serving.online_features_many(b, FEATURES) for b in batches]
    responses = [convert.online_response(f) for f in found]
    wire = [r.SerializeToString() for r in responses]
    health = health_pb2_grpc.HealthStub(running.channel)
    check = health_pb2.HealthCheckRequest()

    def grpc_call(_i: int, batch: list[str]) -> object:
        request = pb.GetOnlineFeaturesRequest(entity_ids=batch, feature_names=FEATURES)
        return client_values(running.stub.GetOnlineFeatures(request, timeout=5))

    return {
        "redis_eval": lambda _i, b: online.fields(b, FEATURES),
        "parse_grid": lambda i, _b: parse_grid(fields[i], len(FEATURES)),
        "online_features_many": lambda _i, b: serving.online_features_many(b, FEATURES),
        "to_protobuf": lambda i, _b: convert.online_response(found[i]),
        "serialize": lambda i, _b: responses[i].SerializeToString(),
        "client_parse": lambda i, _b: pb.GetOnlineFeaturesResponse.FromString(wire[i]),
        "client_values": lambda i, _b: client_values(responses[i]),
        "grpc_health": lambda _i, _b: health.Check(check, timeout=5),
        "grpc_get_online_features": grpc_call,
    }


def measure(running: Running, ids: list[str]) -> dict[str, float]:
    """p50 wall and mean CPU of every step for 100 entities."""
    rng = random.Random(3)
    batches = [rng.sample(ids, 100) for _ in range(ROUNDS)]
    todo = steps(running, batches)
    wall: dict[str, list[float]] = {name: [] for name in todo}
    cpu: dict[str, float] = dict.fromkeys(todo, 0.0)
    for i, batch in enumerate(batches):
        for name, step in todo.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            step(i, batch)
            if i >= WARM:
                cpu[name] += time.process_time() - began_cpu
                wall[name].append((time.perf_counter() - began) * 1000)
    out: dict[str, float] = {}
    for name, values in wall.items():
        out[f"{name}_p50_ms"] = percentile(values, 0.5)
        out[f"{name}_cpu_ms"] = cpu[name] * 1000 / len(values)
    return out


def serve(settings: Settings) -> None:
    """A gRPC server on SERVER_PORT, as one of the stack's processes, until stdin closes."""
    tune_interpreter(settings)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    serving, models = build_serving(settings, client, None, None)
    server, _, _ = build_server(settings, serving, models, Readiness(serving, models))
    server.start()
    print("ready", flush=True)
    sys.stdin.read()
    server.stop(grace=None)


def remote(settings: Settings, ids: list[str]) -> dict[str, float]:
    """Whole calls to a server in another process, timed as bench.peers_workloads does."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.online_many_profile", "--serve", str(settings.state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        channel = grpc.insecure_channel(f"localhost:{SERVER_PORT}")
        stub = pb_grpc.FeatureStoreStub(channel)
        rng = random.Random(7)
        server = psutil.Process(child.pid)
        wall: list[float] = []
        for i in range(WARM + 2 * ROUNDS):
            if i == WARM:
                began_cpu, server_cpu = time.process_time(), sum(server.cpu_times()[:2])
            request = pb.GetOnlineFeaturesRequest(
                entity_ids=rng.sample(ids, 100), feature_names=FEATURES
            )
            began = time.perf_counter()
            client_values(stub.GetOnlineFeatures(request, timeout=5))
            if i >= WARM:
                wall.append((time.perf_counter() - began) * 1000)
        calls = len(wall)
        out = {
            "remote_call_p50_ms": percentile(wall, 0.5),
            "remote_call_p99_ms": percentile(wall, 0.99),
            "remote_client_cpu_ms": (time.process_time() - began_cpu) * 1000 / calls,
            "remote_server_cpu_ms": (sum(server.cpu_times()[:2]) - server_cpu) * 1000 / calls,
        }
        channel.close()
        return out
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


def main() -> None:
    """Time every step; print a table and the JSON summary last."""
    setup_logging("WARNING")
    if sys.argv[1:2] == ["--serve"]:
        serve(local_settings(Path(sys.argv[2])))
        return
    settings = local_settings(Path(tempfile.mkdtemp(prefix="bench-online-many-")))
    service = RedisService(settings)
    started = service.ensure().started
    try:
        client = redis.Redis.from_url(settings.redis_url)
        ids = load(client)
        with running_server(settings) as running:
            results = measure(running, ids)
        results |= remote(settings, ids)
    finally:
        if started:
            service.stop()
    print(f"{'STEP (100 x 10)':<28}{'p50 (ms)':>12}{'CPU (ms)':>12}")
    steps_run = [k.removesuffix("_p50_ms") for k in results if k.endswith("_p50_ms")]
    for name in [n for n in steps_run if not n.startswith("remote_")]:
        print(f"{name:<28}{results[name + '_p50_ms']:>12.3f}{results[name + '_cpu_ms']:>12.3f}")
    print(", ".join(f"{k} {v:.3f}" for k, v in results.items() if k.startswith("remote_")))
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))


def local_settings(state_dir: Path) -> Settings:
    """The bench's settings on this Redis, the server on SERVER_PORT on loopback."""
    return bench_settings(
        state_dir, redis_url=REDIS_URL, grpc_host="localhost", grpc_port=SERVER_PORT
    )


if __name__ == "__main__":
    main()
