"""The workloads of `make bench-peers` (bench/peers.py), each on our stack and, when
`feast` is true, on Feast in turn, with their values compared."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import redis

from bench.common import now
from bench.peers_support import (
    ENTITIES,
    EVENTS_PER_ENTITY,
    FEATURES,
    INGEST_ENTITIES,
    ONLINE_ENTITIES,
    SPINE_ROWS,
    STATE,
    FeastHttp,
    feast_server,
    run_feast,
)
from bridge.producer import FileProducer
from featurestore import constants, stack
from featurestore.constants import online_feature_key
from featurestore.ingest import write_batch
from featurestore.progress import Progress
from featurestore.settings import Settings
from grpc_server.auth import client_channel
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from tasks.app import configure
from tasks.client.query import query_table

log = logging.getLogger("bench.peers")

FEAST_SERVER_PORT = 6680
ONE_ENTITY_SAMPLES = 1000
MANY_SAMPLES = 200
INGEST_TIMEOUT_S = 900
ROUNDS = 2  # training sets, in turn: the machine is shared and its speed drifts

Values = dict[str, list[float | None]]  # entity -> its ten values, None when absent


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


def training(
    settings: Settings, paths: dict[str, Path], repos: dict[str, Path], feast: bool
) -> dict[str, Any]:
    """Both training sets ROUNDS times in turn (best of each), then Feast's file store once."""
    out: dict[str, Any] = {"ours": [], "feast": []}
    ours, theirs = (paths["spine"].with_name(f"{n}.parquet") for n in ("ours", "feast"))
    for round_ in range(ROUNDS):
        mine = training_ours(settings, paths["spine"], ours)
        log.info("peers_training side=ours round=%d %s", round_, mine)
        out["ours"].append(mine)
        if feast:
            result = run_feast(
                "training", "--repo", str(repos["duckdb"]), "--spine", str(paths["spine"]),
                "--output", str(theirs),
            )  # fmt: skip
            log.info("peers_training side=feast_duckdb round=%d %s", round_, result)
            out["feast"].append(result)
    if not feast:
        return out
    out["check_duckdb"] = compare_training(ours, theirs)
    log.info("peers_training_check %s", out["check_duckdb"])
    file_output = paths["spine"].with_name("feast_file.parquet")
    out["feast_file"] = run_feast(
        "training", "--repo", str(repos["file"]), "--spine", str(paths["spine"]),
        "--output", str(file_output),
    )  # fmt: skip
    out["check_file"] = compare_training(ours, file_output)
    log.info("peers_training side=feast_file %s check=%s", out["feast_file"], out["check_file"])
    return out


def ours_features(stub: pb_grpc.FeatureStoreStub, ids: list[str]) -> Values:
    """GetOnlineFeatures of the ids: each entity's ten values (None when absent)."""
    reply = stub.GetOnlineFeatures(
        pb.GetOnlineFeaturesRequest(entity_ids=ids, feature_names=FEATURES), timeout=10
    )
    return {
        r.entity_id: [f.value if f.present else None for f in r.features] for r in reply.results
    }


def online(settings: Settings, repo: Path, feast: bool) -> dict[str, Any]:
    """One entity and 100 entities: GetOnlineFeatures and Feast's feature server in turn
    (who goes first alternates), values compared every tenth call; then Feast's SDK
    in-process for 100 entities."""
    rng = random.Random(11)
    channel = client_channel(settings, f"localhost:{settings.grpc_port}")
    stub = pb_grpc.FeatureStoreStub(channel)
    samples: dict[str, list[float]] = {
        "one_ours": [],
        "one_feast": [],
        "many_ours": [],
        "many_feast": [],
    }
    check = {"entities_compared": 0, "mismatches": 0, "sdk_mismatches": 0}
    calls: list[tuple[str, Callable[[list[str]], Values]]] = [
        ("ours", functools.partial(ours_features, stub))
    ]
    with contextlib.ExitStack() as stack_:
        if feast:
            stack_.enter_context(feast_server(repo, FEAST_SERVER_PORT))
            calls.append(("feast", FeastHttp(FEAST_SERVER_PORT).features))
        with Progress("online reads", ONE_ENTITY_SAMPLES + MANY_SAMPLES) as progress:
            for i in range(100 + ONE_ENTITY_SAMPLES + MANY_SAMPLES):
                many = i >= 100 + ONE_ENTITY_SAMPLES
                ids = [f"cust_{rng.randrange(ONLINE_ENTITIES)}" for _ in range(100 if many else 1)]
                answers = []
                for side, call in calls[:: 1 if i % 2 else -1]:
                    began = time.perf_counter()
                    answers.append(call(ids))
                    if i >= 100:
                        elapsed = (time.perf_counter() - began) * 1000
                        samples[f"{'many' if many else 'one'}_{side}"].append(elapsed)
                if len(answers) == 2 and i % 10 == 0:
                    differ = [e for e in ids if answers[0][e] != answers[1][e]]
                    if differ and not check["mismatches"]:
                        log.warning(
                            "peers_online_differ entity=%s one=%s other=%s",
                            differ[0], answers[0][differ[0]], answers[1][differ[0]],
                        )  # fmt: skip
                    check["entities_compared"] += len(ids)
                    check["mismatches"] += len(differ)
                progress.update(1 if i >= 100 else 0)
    out: dict[str, Any] = {"samples": samples, "check": check}
    if feast:
        ids_file = STATE / "run" / "sdk_ids.json"
        batches = [
            [f"cust_{rng.randrange(ONLINE_ENTITIES)}" for _ in range(100)] for _ in range(50)
        ]
        ids_file.write_text(json.dumps(batches))
        sdk = run_feast("online", "--repo", str(repo), "--ids", str(ids_file), "--samples", "300")
        first = sdk.pop("first")
        mine = ours_features(stub, batches[0])
        check["sdk_mismatches"] = sum(
            mine[e] != [first[f][i] for f in FEATURES] for i, e in enumerate(batches[0])
        )
        out["feast_sdk_many"] = sdk
    channel.close()
    return out


def ingest_ours(settings: Settings, path: Path) -> dict[str, Any]:
    """1M events through Kafka (the producer of `fstore produce`), the bridge and the worker,
    until every row is committed in DuckDB and every entity has its ten features online."""
    app = configure(settings)
    client = redis.Redis.from_url(settings.redis_url)
    total = INGEST_ENTITIES * len(FEATURES)
    # A Redis left answering on this port by an earlier run would hold these keys already.
    keys = [online_feature_key(f"ing_{i}") for i in range(INGEST_ENTITIES)]
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start : start + 10_000])
    began = now()
    FileProducer(settings, 1000).run([path])
    log.info("peers_ingest_produced seconds=%.1f", now() - began)
    deadline = began + INGEST_TIMEOUT_S
    with Progress("ingest (ours)", total) as progress:
        committed = 0
        while committed < total:
            if now() > deadline:
                raise TimeoutError(f"{committed} of {total} events committed after the deadline")
            time.sleep(0.2)
            count = query_table(
                app, "SELECT count(*) AS n FROM features WHERE starts_with(entity_id, 'ing_')",
                timeout=60,
            ).column("n")[0].as_py()  # fmt: skip
            progress.update(int(count) - committed)
            committed = int(count)
    while True:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hlen(key)
        if all(n >= len(FEATURES) for n in pipe.execute()):
            break
        if now() > deadline:
            raise TimeoutError("the ingested entities were not all online by the deadline")
        time.sleep(0.05)
    return {"seconds": now() - began, "events": total}
