"""make bench-speedups: what each speed-up of the read path pays, measured in one run.

The speed-ups are switchable by setting (featurestore.settings): grouped UNION ALL reads
(read_grouping), the last-idle worker thread pool (worker_pool), and the one-trip result
store (read_result_store). One stack and one database serve every variant: the DuckDB
service worker is stopped in supervisord and started here once per variant and round, with
the variant's settings, and the variants take turns in each round (the machine's speed
drifts). Each variant: the latest-features read at concurrency 1 (p50, p99), at
concurrency 50 (reads/s), and a task that does nothing as the floor. The last line of output
is one JSON object.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import bench_settings, latest_catch_up_s, now, percentile, running_stack
from bench.read import entity, load, timed
from featurestore import constants, stack
from featurestore.logs import setup_logging
from featurestore.reads.features import latest_features
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import CeleryReader

log = logging.getLogger("bench.speedups")

ROWS = 2_000_000
ROUNDS = 3
SAMPLES_C1 = 300
READS_C50 = 3000

# Settings of each variant (FSTORE_* variables of the worker); "all" is the default stack.
VARIANTS: dict[str, dict[str, str]] = {
    "all": {},
    "no_grouping": {"FSTORE_READ_GROUPING": "false"},
    "celery_result_store": {"FSTORE_READ_RESULT_STORE": "celery"},
    "celery_pool_51": {"FSTORE_WORKER_POOL": "celery"},
    # About twice the cores: 3 reader threads and one for writes.
    "celery_pool_4": {"FSTORE_WORKER_POOL": "celery", "FSTORE_READ_THREADS": "3"},
    "last_idle_pool_4": {"FSTORE_READ_THREADS": "3"},
}


def start_worker(
    settings: Settings, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """The DuckDB service worker with a variant's settings, once it answers."""
    with log_path.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "featurestore.cli", "worker"],
            env={**os.environ, **settings.to_env(), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = configure(settings)
    deadline = now() + 120
    while now() < deadline:
        try:
            app.send_task(constants.TASK_PING, queue=settings.read_queue).get(timeout=5)
        except Exception:  # noqa: BLE001 - not up yet
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited: see {log_path}") from None
        else:
            return worker
    raise TimeoutError("the worker did not answer within 120 s")


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, as supervisord does it."""
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=120)


def measure(settings: Settings) -> dict[str, Any]:
    """Concurrency 1 and 50 reads, and the no-op floor, against the running worker."""
    app = configure(settings)
    reader = CeleryReader(app)

    def noop(_i: int) -> None:
        app.send_task(constants.TASK_READ_MANY, args=[[]]).get(timeout=10)

    def read(i: int) -> None:
        latest_features(reader, entity(i))

    timed(noop, 30)
    timed(read, 30)
    c1: list[float] = []
    floor: list[float] = []
    for i in range(SAMPLES_C1):
        floor += timed(noop, 1)
        c1 += timed(lambda _j, k=i: read(k), 1)
    began = now()
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(read, range(READS_C50)))
    return {
        "c1_p50_ms": percentile(c1, 0.5),
        "c1_p99_ms": percentile(c1, 0.99),
        "noop_p50_ms": percentile(floor, 0.5),
        "c50_reads_per_s": READS_C50 / (now() - began),
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per variant: the median over rounds of each figure, and c1 p50 over the no-op's."""
    out: dict[str, dict[str, float]] = {}
    for name, rounds in runs.items():
        figures = {key: sorted(r[key] for r in rounds)[len(rounds) // 2] for key in rounds[0]}
        figures["c1_p50_over_noop"] = figures["c1_p50_ms"] / figures["noop_p50_ms"]
        out[name] = {k: round(v, 3) for k, v in figures.items()}
    return out


def main() -> None:
    """Load, then measure every variant in turn for ROUNDS rounds; JSON summary last."""
    setup_logging("WARNING")
    for name in ("bench", "featurestore.progress"):
        logging.getLogger(name).setLevel(logging.INFO)
    folder = Path(tempfile.mkdtemp(prefix="fstore-bench-speedups-"))
    # Ports of its own, so that it can run beside the other benchmarks.
    settings = bench_settings(
        folder / "state",
        kafka_bootstrap="localhost:12092",
        kafka_controller_port=12093,
        redis_url="redis://localhost:9379/0",
        grpc_port=53051,
        flower_port=8555,
        metrics_port_worker=12101,
        metrics_port_bridge=12102,
        metrics_port_grpc=12103,
        metrics_port_grpc_extra=12106,
        metrics_port_beat=12104,
        metrics_port_model_sync=12105,
        prometheus_port=12090,
        alertmanager_port=12094,
        redis_exporter_port=12121,
        kafka_jmx_exporter_port=12404,
        azure_connection_string=Settings().azure_connection_string.replace(":10000/", ":13000/"),
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    with running_stack(settings):
        load(settings, ROWS)
        log.info("bench_loaded rows=%d catch_up_s=%.1f", ROWS, latest_catch_up_s(settings))
        stack.stop_program(settings, "duckdb-worker")
        for round_number in range(ROUNDS):
            for name, env in VARIANTS.items():
                worker = start_worker(settings, env, settings.logs_dir / "bench-worker.log")
                try:
                    figures = measure(settings)
                finally:
                    stop_worker(worker)
                runs[name].append(figures)
                log.info(
                    "bench_variant round=%d variant=%s %s",
                    round_number,
                    name,
                    " ".join(f"{k}={v:.3f}" for k, v in figures.items()),
                )
    shutil.rmtree(folder, ignore_errors=True)
    summary = summarise(runs)
    print(f"{'variant':<22}{'c1 p50':>9}{'c1 p99':>9}{'noop p50':>10}{'c50 reads/s':>13}")
    for name, f in summary.items():
        print(
            f"{name:<22}{f['c1_p50_ms']:>9.2f}{f['c1_p99_ms']:>9.2f}{f['noop_p50_ms']:>10.2f}"
            f"{f['c50_reads_per_s']:>13.0f}"
        )
    print(json.dumps({"rows": ROWS, "rounds": ROUNDS, "variants": summary}))


if __name__ == "__main__":
    main()
