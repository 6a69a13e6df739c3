"""make bench-peers: this feature store against Feast, side by side, in one run.

Feast (pinned, bench.peers_support.FEAST_VERSION) runs from a virtual environment of its
own under .state/peers, as subprocesses; this process never imports it. Both get the same
data: a history of 200k entities x 5 events x 10 features (one wide Parquet file for Feast,
10M long rows written through our write task), the latest row of 100k entities online, a
1M-row spine, 1M events to ingest. Workloads, each on both, with their values compared:
the point-in-time training set (ours against Feast's DuckDB offline store; Feast's default
file store is run too, to count the spine rows it drops), one entity's features over the
network (GetOnlineFeatures over gRPC against `feast serve` with a keep-alive HTTP client,
in turn), 100 entities (the same, and Feast's SDK in-process), the ingestion of 1M events
into the online and offline stores (`fstore produce`'s producer through Kafka, the bridge
and the worker, against Feast's push). The last line of output is one JSON object.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import grpc
import numpy as np
import psutil
import pyarrow as pa
import redis

from bench.common import bench_settings, latest_catch_up_s, now, percentile, running_stack
from bench.peers_support import (
    ENTITIES,
    EVENTS_PER_ENTITY,
    FEAST_VERSION,
    FEATURES,
    INGEST_ENTITIES,
    ONLINE_ENTITIES,
    SPINE_ROWS,
    STATE,
    FeastHttp,
    FeastUnavailableError,
    feast_python,
    feast_redis,
    feast_server,
    make_data,
    run_feast,
)
from bridge.producer import FileProducer
from featurestore import constants, stack
from featurestore.constants import online_feature_key
from featurestore.ingest import write_batch
from featurestore.logs import setup_logging
from featurestore.progress import Progress
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from tasks.app import configure
from tasks.client.query import query_table

log = logging.getLogger("bench.peers")

Values = dict[str, list[float | None]]  # entity -> its ten values, None when absent

FEAST_REDIS_PORT = 7480
FEAST_SERVER_PORT = 6680
ONE_ENTITY_SAMPLES = 1000
MANY_SAMPLES = 200
ROUNDS = 2  # training sets, in turn: the machine is shared and its speed drifts


def settings_for(folder: Path) -> Settings:
    """Our stack on ports of its own (no other benchmark's)."""
    base = Settings()
    return bench_settings(
        folder / "state",
        redis_url="redis://localhost:7479/0",
        kafka_bootstrap="localhost:10192",
        kafka_controller_port=10193,
        grpc_port=51151,
        flower_port=6655,
        metrics_port_worker=10201,
        metrics_port_bridge=10202,
        metrics_port_grpc=10203,
        metrics_port_beat=10204,
        metrics_port_model_sync=10205,
        prometheus_port=10190,
        azure_connection_string=base.azure_connection_string.replace(":10000/", ":11100/"),
    )


def load_history(settings: Settings, history: Path) -> None:
    """The wide history as long rows through the write task (the bridge's path without
    Kafka; ingestion is measured on its own), in event time order."""
    app = configure(settings)
    con = duckdb.connect()
    reader = con.sql(
        f"SELECT entity_id, feature_name, value, event_timestamp FROM read_parquet('{history}') "
        f"UNPIVOT (value FOR feature_name IN ({', '.join(FEATURES)}))"
    ).to_arrow_reader(500_000)
    pending: list[Any] = []
    offset = 0
    with Progress("load history (ours)", ENTITIES * EVENTS_PER_ENTITY * len(FEATURES)) as progress:
        for batch in reader:
            # Offsets as if 10k rows came per Kafka message, so that no batch is a duplicate.
            offsets = pa.array(np.arange(batch.num_rows) // 10_000 + offset)
            table = pa.Table.from_batches([batch]).append_column("offset", offsets)
            first, last = offset, offset + (batch.num_rows - 1) // 10_000
            offset = last + 1
            pending.append(
                app.send_task(
                    constants.TASK_WRITE_BATCH,
                    args=[write_batch.encode(table), "bench-peers", 0, first, last],
                    queue=settings.write_queue,
                )
            )
            while len(pending) > 2:
                pending.pop(0).get(timeout=900)
            progress.update(batch.num_rows)
        for result in pending:
            result.get(timeout=900)


def worker_cpu_s(settings: Settings) -> float:
    """CPU seconds used so far by the DuckDB worker (and its children)."""
    pid = next(p.pid for p in stack.programs(settings) if p.name == "duckdb-worker")
    proc = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])


def training_ours(settings: Settings, spine: Path, output: Path) -> dict[str, float]:
    """Our training set through the DuckDB service: wall seconds and the worker's CPU."""
    app = configure(settings)
    began, cpu = now(), worker_cpu_s(settings)
    report = app.send_task(
        constants.TASK_TRAINING_SET,
        args=[str(spine), FEATURES, {}, str(output)],
        queue=settings.read_queue,
    ).get(timeout=1800)
    assert report["rows"] == SPINE_ROWS, report
    return {"seconds": now() - began, "cpu_seconds": worker_cpu_s(settings) - cpu}


def compare_training(ours: Path, theirs: Path) -> dict[str, int]:
    """Rows of each, rows only one of them has, rows whose values differ (matched by label)."""
    differ = " OR ".join(f"a.{f} IS DISTINCT FROM b.{f}" for f in FEATURES)
    row = duckdb.execute(
        f"""SELECT count(a.label), count(b.label),
                   count(*) FILTER (WHERE a.label IS NULL OR b.label IS NULL),
                   count(*) FILTER (WHERE a.label = b.label AND ({differ}))
            FROM read_parquet('{ours}') a FULL JOIN read_parquet('{theirs}') b USING (label)"""
    ).fetchall()[0]
    return dict(zip(("rows_ours", "rows_feast", "unmatched", "differ"), map(int, row), strict=True))


def training(settings: Settings, paths: dict[str, Path], repos: dict[str, Path]) -> dict[str, Any]:
    """Both training sets ROUNDS times in turn (best of each), then Feast's file store once."""
    out: dict[str, Any] = {"ours": [], "feast": []}
    for round_ in range(ROUNDS):
        mine = training_ours(settings, paths["spine"], paths["spine"].with_name("ours.parquet"))
        log.info("peers_training side=ours round=%d %s", round_, mine)
        theirs = run_feast(
            "training", "--repo", str(repos["duckdb"]), "--spine", str(paths["spine"]),
            "--output", str(paths["spine"].with_name("feast.parquet")),
        )  # fmt: skip
        log.info("peers_training side=feast_duckdb round=%d %s", round_, theirs)
        out["ours"].append(mine)
        out["feast"].append(theirs)
    out["check_duckdb"] = compare_training(
        paths["spine"].with_name("ours.parquet"), paths["spine"].with_name("feast.parquet")
    )
    log.info("peers_training_check %s", out["check_duckdb"])
    file_store = run_feast(
        "training", "--repo", str(repos["file"]), "--spine", str(paths["spine"]),
        "--output", str(paths["spine"].with_name("feast_file.parquet")),
    )  # fmt: skip
    out["feast_file"] = file_store
    out["check_file"] = compare_training(
        paths["spine"].with_name("ours.parquet"), paths["spine"].with_name("feast_file.parquet")
    )
    log.info("peers_training side=feast_file %s check=%s", file_store, out["check_file"])
    return out


def ours_features(stub: pb_grpc.FeatureStoreStub, ids: list[str]) -> Values:
    """GetOnlineFeatures of the ids: each entity's ten values (None when absent)."""
    reply = stub.GetOnlineFeatures(
        pb.GetOnlineFeaturesRequest(entity_ids=ids, feature_names=FEATURES), timeout=10
    )
    return {
        r.entity_id: [f.value if f.present else None for f in r.features] for r in reply.results
    }


def online(settings: Settings, repo: Path) -> dict[str, Any]:
    """One entity and 100 entities: GetOnlineFeatures and Feast's feature server in turn,
    values compared; then Feast's SDK in-process for 100 entities."""
    rng = random.Random(11)
    channel = grpc.insecure_channel(f"localhost:{settings.grpc_port}")
    stub = pb_grpc.FeatureStoreStub(channel)
    one_ours: list[float] = []
    one_feast: list[float] = []
    many_ours: list[float] = []
    many_feast: list[float] = []
    mismatches = 0
    compared = 0
    with feast_server(repo, FEAST_SERVER_PORT):
        feast = FeastHttp(FEAST_SERVER_PORT)
        calls: list[tuple[Callable[[list[str]], Values], list[float], list[float]]] = [
            (functools.partial(ours_features, stub), one_ours, many_ours),
            (feast.features, one_feast, many_feast),
        ]
        with Progress("online reads", ONE_ENTITY_SAMPLES + MANY_SAMPLES) as progress:
            for i in range(100 + ONE_ENTITY_SAMPLES + MANY_SAMPLES):
                many = i >= 100 + ONE_ENTITY_SAMPLES
                ids = [f"cust_{rng.randrange(ONLINE_ENTITIES)}" for _ in range(100 if many else 1)]
                answers = []
                for call, one, hundred in calls[:: 1 if i % 2 else -1]:  # who goes first alternates
                    began = time.perf_counter()
                    answers.append(call(ids))
                    if i >= 100:
                        (hundred if many else one).append((time.perf_counter() - began) * 1000)
                if i % 10 == 0:
                    compared += len(ids)
                    differ = [e for e in ids if answers[0][e] != answers[1][e]]
                    if differ and not mismatches:
                        log.warning("peers_online_differ %s %s", answers[0][differ[0]], answers[1][differ[0]])
                    mismatches += len(differ)
                if i >= 100:
                    progress.update(1)
    channel.close()
    ids_file = STATE / "run" / "sdk_ids.json"
    ids_file.write_text(
        json.dumps(
            [[f"cust_{rng.randrange(ONLINE_ENTITIES)}" for _ in range(100)] for _ in range(50)]
        )
    )
    sdk = run_feast("online", "--repo", str(repo), "--ids", str(ids_file), "--samples", "300")
    first = sdk.pop("first")
    sdk_ids = json.loads(ids_file.read_text())[0]
    channel = grpc.insecure_channel(f"localhost:{settings.grpc_port}")
    mine = ours_features(pb_grpc.FeatureStoreStub(channel), sdk_ids)
    channel.close()
    sdk_mismatches = sum(mine[e] != [first[f][i] for f in FEATURES] for i, e in enumerate(sdk_ids))
    return {
        "one": {"ours": one_ours, "feast": one_feast},
        "many": {"ours": many_ours, "feast_server": many_feast},
        "feast_sdk_many": sdk,
        "check": {
            "entities_compared": compared,
            "mismatches": mismatches,
            "sdk_mismatches": sdk_mismatches,
        },
    }


def ingest_ours(settings: Settings, path: Path) -> dict[str, Any]:
    """1M events through Kafka (the producer of `fstore produce`), the bridge and the worker,
    until every row is committed in DuckDB and every entity has its ten features online."""
    app = configure(settings)
    client = redis.Redis.from_url(settings.redis_url)
    total = INGEST_ENTITIES * len(FEATURES)
    began = now()
    FileProducer(settings, 1000).run([path])
    log.info("peers_ingest_produced seconds=%.1f", now() - began)
    with Progress("ingest (ours)", total) as progress:
        committed = 0
        while committed < total:
            time.sleep(0.2)
            count = query_table(
                app, "SELECT count(*) AS n FROM features WHERE starts_with(entity_id, 'ing_')",
                timeout=60,
            ).column("n")[0].as_py()  # fmt: skip
            progress.update(int(count) - committed)
            committed = int(count)
    while True:
        pipe = client.pipeline(transaction=False)
        for i in range(INGEST_ENTITIES):
            pipe.hlen(online_feature_key(f"ing_{i}"))
        if all(n >= len(FEATURES) for n in pipe.execute()):
            break
    return {"seconds": now() - began, "events": total}


def run(folder: Path) -> dict[str, Any]:
    """Every workload on both systems."""
    feast_python()
    paths = make_data(folder)
    repos = {"duckdb": folder / "feast_repo", "file": folder / "feast_repo_file"}
    settings = settings_for(folder)
    results: dict[str, Any] = {}
    with feast_redis(FEAST_REDIS_PORT, folder), running_stack(settings):
        setup = subprocess.Popen(
            [str(feast_python()), str(Path(__file__).with_name("peers_feast.py")), "setup",
             "--repo", str(repos["duckdb"]), "--file-repo", str(repos["file"]),
             "--redis-port", str(FEAST_REDIS_PORT), "--history", str(paths["history"]),
             "--pushed", str(paths["pushed"]), "--online", str(paths["online"])],
            stdout=subprocess.PIPE, text=True, cwd=STATE,
        )  # fmt: skip
        load_history(settings, paths["history"])
        log.info("peers_loaded latest_catch_up_s=%.1f", latest_catch_up_s(settings))
        out, _ = setup.communicate(timeout=1800)
        if setup.returncode != 0:
            raise FeastUnavailableError(f"feast setup exited {setup.returncode}")
        results["feast_setup"] = json.loads(out.strip().splitlines()[-1])
        log.info("peers_feast_setup %s", results["feast_setup"])
        results["training"] = training(settings, paths, repos)
        results["online"] = online(settings, repos["duckdb"])
        results["ingest_ours"] = ingest_ours(settings, paths["ingest_long"])
        log.info("peers_ingest side=ours %s", results["ingest_ours"])
        results["ingest_feast"] = run_feast(
            "push", "--repo", str(repos["duckdb"]), "--events", str(paths["ingest_wide"]),
            "--pushed", str(paths["pushed"]),
        )  # fmt: skip
        log.info("peers_ingest side=feast %s", results["ingest_feast"])
    return results


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The table's figures: for each workload ours, Feast's and ours / Feast's."""
    tr, on = results["training"], results["online"]
    figures = {
        "training_set_s": (
            min(r["seconds"] for r in tr["ours"]),
            min(r["seconds"] for r in tr["feast"]),
        ),
        "training_set_cpu_s": (
            min(r["cpu_seconds"] for r in tr["ours"]),
            min(r["cpu_seconds"] for r in tr["feast"]),
        ),
        "online_1_p50_ms": (
            percentile(on["one"]["ours"], 0.5),
            percentile(on["one"]["feast"], 0.5),
        ),
        "online_1_p99_ms": (
            percentile(on["one"]["ours"], 0.99),
            percentile(on["one"]["feast"], 0.99),
        ),
        "online_100_p50_ms": (
            percentile(on["many"]["ours"], 0.5),
            min(percentile(on["many"]["feast_server"], 0.5), on["feast_sdk_many"]["p50_ms"]),
        ),
        "online_100_p99_ms": (
            percentile(on["many"]["ours"], 0.99),
            min(percentile(on["many"]["feast_server"], 0.99), on["feast_sdk_many"]["p99_ms"]),
        ),
        "ingest_events_per_s": (
            results["ingest_ours"]["events"] / results["ingest_ours"]["seconds"],
            results["ingest_feast"]["events"] / results["ingest_feast"]["seconds"],
        ),
    }
    out: dict[str, Any] = {"feast_version": FEAST_VERSION}
    for name, (ours, feast) in figures.items():
        out[f"{name}_ours"] = round(ours, 3)
        out[f"{name}_feast"] = round(feast, 3)
        out[f"{name}_ratio"] = round(ours / feast, 3)
    out["online_100_feast_server_p50_ms"] = round(percentile(on["many"]["feast_server"], 0.5), 3)
    out["online_100_feast_sdk_p50_ms"] = round(on["feast_sdk_many"]["p50_ms"], 3)
    out["feast_file_store_training_s"] = round(tr["feast_file"]["seconds"], 3)
    out["feast_file_store_rows_dropped"] = SPINE_ROWS - int(tr["feast_file"]["rows"])
    out["training_values_differ"] = tr["check_duckdb"]["differ"] + tr["check_duckdb"]["unmatched"]
    out["online_values_differ"] = on["check"]["mismatches"] + on["check"]["sdk_mismatches"]
    out["feast_offline_rows_after_push"] = results["ingest_feast"]["offline_rows"]
    return out


def table(out: dict[str, Any]) -> str:
    """The figures side by side (for events/s higher is better, elsewhere lower)."""
    lines = [f"{'workload':<22} {'ours':>12} {'feast ' + FEAST_VERSION:>14} {'ours/feast':>11}"]
    for key in out:
        if key.endswith("_ratio"):
            name = key.removesuffix("_ratio")
            lines.append(
                f"{name:<22} {out[name + '_ours']:>12,.3f} {out[name + '_feast']:>14,.3f} "
                f"{out[key]:>11.3f}"
            )
    return "\n".join(lines)


def main() -> None:
    """Run, print the table, then the JSON summary as the last line."""
    setup_logging("WARNING")
    for name in ("bench", "featurestore.progress"):
        logging.getLogger(name).setLevel(logging.INFO)
    folder = STATE / "run"
    shutil.rmtree(folder, ignore_errors=True)
    try:
        results = run(folder)
    except FeastUnavailableError as exc:
        print(f"bench-peers: Feast unavailable: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    for path in folder.iterdir():  # the data and our stack's state: hundreds of MB
        if path.name != "results.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (folder / "results.json").write_text(json.dumps(results, default=str))
    out = summary(results)
    print(table(out))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
