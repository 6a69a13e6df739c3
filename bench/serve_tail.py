"""python -m bench.serve_tail: Predict's tail in a gRPC process beside the whole stack.

A bench stack (every program, the prediction log of the demo's model going through Kafka,
the bridge and DuckDB), 10k applicants written straight into the online store, the demo's
model published through Azurite and the registry. Then, taking turns, a gRPC program of its
own (`featurestore.cli grpc`'s code, on ports of its own, scraped every scrape interval as
Prometheus would) per variant: Predict for one entity at a steady rate (open loop) with a
health Check at 50/s beside it (the floor), the CPU of that process per call, and its
garbage collections' pauses; then, when `--ramp` gives rates, a few seconds at each.
Variants (`--variants`, comma-separated; parts joined with `+`): `base` (as configured),
`switch=<ms>` (settings.grpc_switch_interval_ms), `linger=<ms>`
(settings.prediction_log_linger_ms), `procs=<n>`
(settings.grpc_processes), `nolog` (no prediction log), `unconsumed` (the log into a topic
no bridge reads), `stacknice=<n>` and `stackidle` (the stack's other programs reniced, or
under SCHED_IDLE, for the variant). The last line of output is one JSON
object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import psutil
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import bench_settings, percentile, running_stack
from bench.load import open_loop
from bench.serve import publish_model
from bench.stack_priority import renice_stack, stack_nice, stack_policy
from bench.stage_cpu import stage_cpu
from demo import data, publish
from featurestore.logs import setup_logging
from featurestore.settings import Settings
from featurestore.store.online import OnlineStore
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc

ENTITIES = 10_000
RAMP_SECONDS = 4
PORT_SHIFT = 7  # the variant's gRPC and metrics ports: the stack's plus this
UNCONSUMED_TOPIC = "predictions-unconsumed"
# The stack's programs and servers a log record passes through (bench.stage_cpu's names).
STAGES = ("bridge", "duckdb-worker", "kafka-broker", "redis-server", "flower")


def _variant_env(settings: Settings, variant: str) -> dict[str, str]:
    env = {
        **os.environ,
        **settings.to_env(),
        "FSTORE_GRPC_PORT": str(settings.grpc_port + PORT_SHIFT),
        "FSTORE_METRICS_PORT_GRPC": str(settings.metrics_port_grpc + PORT_SHIFT),
        # The group's other processes: past the stack's own (at most 4 of them).
        "FSTORE_METRICS_PORT_GRPC_EXTRA": str(settings.metrics_port_grpc_extra + PORT_SHIFT),
    }
    for part in variant.split("+"):
        if part.startswith("switch="):
            env["FSTORE_GRPC_SWITCH_INTERVAL_MS"] = part.split("=", 1)[1]
        elif part.startswith("procs="):
            env["FSTORE_GRPC_PROCESSES"] = part.split("=", 1)[1]
        elif part.startswith("linger="):
            env["FSTORE_PREDICTION_LOG_LINGER_MS"] = part.split("=", 1)[1]
        elif part == "nolog":
            env["FSTORE_PREDICTION_LOG_ENABLED"] = "false"
        elif part == "unconsumed":
            # Logged into a topic the bridge does not read: the gRPC process and Kafka do
            # their part of the log, the bridge and DuckDB none.
            env["FSTORE_PREDICTIONS_TOPIC"] = UNCONSUMED_TOPIC
    return env


def _create_unconsumed_topic(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(settings.kafka_client_config())
    if UNCONSUMED_TOPIC not in admin.list_topics(timeout=10).topics:
        for future in admin.create_topics([NewTopic(UNCONSUMED_TOPIC, 1, 1)]).values():
            future.result(30)


def serve() -> None:
    """The child: `fstore grpc` as supervisord runs it, reporting its GC pauses at exit."""
    from featurestore.cli import cmd_grpc

    pauses: list[float] = []
    began = [0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - began[0]) * 1000)

    gc.callbacks.append(on_gc)
    # The parent's signal that measuring starts: the pauses of start-up are not counted.
    signal.signal(signal.SIGUSR1, lambda _s, _f: pauses.clear())
    setup_logging("WARNING")
    cmd_grpc(Settings(), argparse.Namespace())
    print(
        json.dumps(
            {
                "gc_count": len(pauses),
                "gc_total_ms": round(sum(pauses), 2),
                "gc_max_ms": round(max(pauses, default=0.0), 2),
            }
        ),
        file=sys.stderr,
        flush=True,
    )


def _scrape(url: str, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - http
                reply.read()
        except OSError:
            pass


def _stage_cpu_per_1k(
    before: dict[str, float], after: dict[str, float], records: int
) -> dict[str, float]:
    """CPU seconds per 1,000 Predicts (one log record each) of the stack's stages that
    take the log's records downstream, over the steady run: CPU per record moves far less
    with the machine's load than latency does."""
    per = 1000 / max(records, 1)
    return {
        f"{stage}_cpu_s_per_1k": (after[stage] - before.get(stage, 0.0)) * per
        for stage in STAGES
        if stage in after
    }


def _cpu(process: psutil.Process) -> float:
    procs = [process, *process.children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def client(spec: str) -> None:
    """A load client process (--client port,ids_file,rate,seconds,start_at): one share of a
    ramp step, so that the client's own CPU is not one process's GIL."""
    port, ids_file, rate, seconds, start_at = spec.split(",")
    ids = Path(ids_file).read_text().split()
    channel = grpc.insecure_channel(f"localhost:{port}")
    stub = pb_grpc.FeatureStoreStub(channel)
    rng = random.Random(os.getpid())
    requests = [
        pb.PredictRequest(model_id=publish.MODEL_ID, entity_ids=[rng.choice(ids)])
        for _ in range(997)
    ]
    stub.Predict(requests[0], timeout=10)
    time.sleep(max(0.0, float(start_at) - time.time()))
    run = open_loop(
        lambda i: stub.Predict(requests[i % len(requests)], timeout=2),
        float(rate),
        float(seconds),
        16,
    )
    done = len(run.latencies_ms) + run.error_count
    print(json.dumps({"done": done, "errors": run.error_count, "elapsed": run.elapsed_s}))


def ramp_step(port: int, ids_file: Path, rate: float, clients: int) -> str:
    """One ramp step from `clients` client processes taking equal shares of the rate."""
    start_at = time.time() + 10
    spec = f"{port},{ids_file},{rate / clients},{RAMP_SECONDS},{start_at}"
    command = [sys.executable, "-m", "bench.serve_tail", "--client", spec]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    outs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    achieved = sum(o["done"] / o["elapsed"] for o in outs)
    return f"{achieved:.0f}/s errors={sum(o['errors'] for o in outs)}"


def run_variant(
    settings: Settings,
    variant: str,
    ids: list[str],
    rate: float,
    seconds: float,
    ramp: list[float],
    clients: int = 1,
    ids_file: Path | None = None,
) -> dict[str, Any]:
    """Start the variant's server, wait until SERVING, measure (the steady rate with the
    floor beside it, then each rate of `ramp` for RAMP_SECONDS), stop it."""
    env = _variant_env(settings, variant)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.serve_tail", "--serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    port = int(env["FSTORE_GRPC_PORT"])
    channel = grpc.insecure_channel(f"localhost:{port}")
    stub = pb_grpc.FeatureStoreStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest()
    deadline = time.monotonic() + 120
    while True:
        try:
            if health.Check(check, timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline or child.poll() is not None:
            child.kill()
            _out, err = child.communicate()
            raise RuntimeError(f"variant {variant} never served: {err[-3000:]}")
        time.sleep(0.2)
    spare = {os.getpid(), child.pid}
    spare |= {p.pid for p in psutil.Process(child.pid).children(recursive=True)}
    reniced = renice_stack(settings, stack_nice(variant), spare, stack_policy(variant))
    rng = random.Random(7)
    requests = [
        pb.PredictRequest(model_id=publish.MODEL_ID, entity_ids=[rng.choice(ids)])
        for _ in range(997)
    ]

    def predict(i: int) -> object:
        return stub.Predict(requests[i % len(requests)], timeout=2)

    def floor(_i: int) -> object:
        return health.Check(check, timeout=2)

    open_loop(predict, rate, 5, 16)  # warm-up (and the start-up freeze behind us)
    stop = threading.Event()
    metrics_url = f"http://localhost:{env['FSTORE_METRICS_PORT_GRPC']}/metrics"
    scraper = threading.Thread(
        target=_scrape, args=(metrics_url, settings.prometheus_scrape_interval_s, stop)
    )
    scraper.start()
    process = psutil.Process(child.pid)
    redis_client = redis.Redis.from_url(settings.redis_url)
    redis_before = redis_client.info()
    redis_client.config_set("latency-monitor-threshold", 1)
    redis_client.config_set("slowlog-log-slower-than", 1000)
    redis_client.execute_command("LATENCY", "RESET")  # type: ignore[no-untyped-call]
    redis_client.slowlog_reset()
    floors: list[Any] = []
    floor_thread = threading.Thread(
        target=lambda: floors.append(open_loop(floor, 50, seconds, 2)), daemon=True
    )
    child.send_signal(signal.SIGUSR1)
    stages_before = stage_cpu(settings)
    cpu_before = _cpu(process)
    floor_thread.start()
    result = open_loop(predict, rate, seconds, 16)
    floor_thread.join()
    cpu = _cpu(process) - cpu_before
    stages = _stage_cpu_per_1k(stages_before, stage_cpu(settings), len(result.latencies_ms))
    redis_after = redis_client.info()
    print(
        "redis_latency",
        variant,
        redis_client.execute_command("LATENCY", "LATEST"),  # type: ignore[no-untyped-call]
        [(e["duration"], e["command"][:60]) for e in redis_client.slowlog_get(10)],
        file=sys.stderr,
        flush=True,
    )
    # Redis blocks while it forks (an AOF rewrite) or waits on a slow fsync.
    redis_stats = {
        f"redis_{key}": redis_after.get(key, 0) - redis_before.get(key, 0)
        for key in ("total_forks", "aof_delayed_fsync", "total_commands_processed")
    }
    redis_stats["redis_latest_fork_usec"] = redis_after.get("latest_fork_usec", 0)
    steps = {}
    for step in ramp:
        if clients == 1:
            run = open_loop(predict, step, RAMP_SECONDS, 16)
            steps[f"ramp_{step:g}"] = f"{run.achieved_rps:.0f}/s errors={run.error_count}"
        else:
            assert ids_file is not None
            steps[f"ramp_{step:g}"] = ramp_step(port, ids_file, step, clients)
    stop.set()
    scraper.join()
    channel.close()
    renice_stack(settings, 0, spare)
    child.send_signal(signal.SIGTERM)
    _out, err = child.communicate(timeout=60)
    reports = [line for line in err.splitlines() if line.startswith('{"gc_count"')]
    gc_stats = json.loads(reports[-1]) if reports else {}
    calls = len(result.latencies_ms) + len(floors[0].latencies_ms)
    return {
        "variant": variant,
        **result.summary("predict"),
        **{k: v for k, v in floors[0].summary("floor").items() if "p50" in k or "p99" in k},
        "server_cpu_ms_per_call": cpu * 1000 / max(calls, 1),
        **stages,
        **gc_stats,
        **steps,
        "load_average": os.getloadavg()[0],
        "threads_reniced": reniced,
        **redis_stats,
    }


def main() -> None:
    """Stack up, data in, variants in turn, JSON out."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1, help="client processes of the ramp")
    parser.add_argument("--variants", default="switch=5,base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--ramp", default="", help="comma-separated rates, after the steady run")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.client:
        client(args.client)
        return
    setup_logging("WARNING")
    folder = Path(tempfile.mkdtemp(prefix="fstore-bench-tail-"))
    settings = bench_settings(folder / "state", prediction_log_models=[publish.MODEL_ID])
    rows: list[dict[str, Any]] = []
    ramp = [float(r) for r in args.ramp.split(",") if r]
    try:
        with running_stack(settings):
            credit = data.generate(ENTITIES, prefix="t_")
            micros = int(time.time() * 1e6)
            packed = [
                "".join(
                    f"{name}\x1f{micros}\x1f{value!r}\x1f0\x1e"
                    for name, value in zip(data.FEATURE_NAMES, row.tolist(), strict=True)
                )
                for row in credit.features
            ]
            import pyarrow as pa

            OnlineStore(redis.Redis.from_url(settings.redis_url)).apply_updates(
                pa.table({"entity_id": credit.entity_ids, "updates": packed})
            )
            publish_model(settings, credit, folder)
            _create_unconsumed_topic(settings)
            ids_file = folder / "ids.txt"
            ids_file.write_text("\n".join(credit.entity_ids))
            for _ in range(args.rounds):
                for variant in args.variants.split(","):
                    row = run_variant(
                        settings,
                        variant,
                        credit.entity_ids,
                        args.rate,
                        args.seconds,
                        ramp,
                        args.clients,
                        ids_file,
                    )
                    print(json.dumps({k: _round(v) for k, v in row.items()}), flush=True)
                    rows.append(row)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary: dict[str, Any] = {}
    for variant in args.variants.split(","):
        mine = [r for r in rows if r["variant"] == variant]
        keys = ["predict_p50_ms", "predict_p99_ms", "floor_p99_ms", "server_cpu_ms_per_call"]
        for key in keys + [f"{stage}_cpu_s_per_1k" for stage in STAGES]:
            summary[f"{variant}:{key}"] = [_round(r.get(key)) for r in mine]
        summary[f"{variant}:predict_p99_ms_median"] = _round(
            percentile([r["predict_p99_ms"] for r in mine], 0.5)
        )
    print(json.dumps(summary))


def _round(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
