"""Feast's side of `make bench-peers`, run by the Python of Feast's own virtual environment
(never imported by the project). One sub-command per step; each prints one JSON line last.

  setup     the feature repositories (DuckDB and file offline stores), apply, online load
  training  a point-in-time training set from a spine file into a Parquet file
  online    get_online_features of the SDK in-process (100 entities), timed
  push      events pushed to the online and offline stores, timed
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]

FEATURES = [f"feature_{k}" for k in range(10)]
VIEW = "fv"
PUSH_VIEW = "pushed"
PUSH_SOURCE = "push_events"


def write_yaml(repo: Path, offline: str, redis_port: int) -> None:
    """feature_store.yaml: local provider, Redis online store, the given offline store."""
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: peers\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "entity_key_serialization_version: 3\n"
        "online_store:\n"
        "  type: redis\n"
        f"  connection_string: localhost:{redis_port}\n"
        "offline_store:\n"
        f"  type: {offline}\n"
    )


def objects(history: Path, pushed: Path) -> list[Any]:
    """The entity, the history's feature view, and the push source's feature view."""
    from feast import Entity, FeatureView, Field, FileSource, PushSource  # type: ignore[import-not-found,unused-ignore]
    from feast.types import Float64  # type: ignore[import-not-found,unused-ignore]

    entity = Entity(name="entity", join_keys=["entity_id"])
    schema = [Field(name=f, dtype=Float64) for f in FEATURES]
    source = FileSource(
        path=str(history), timestamp_field="event_timestamp", created_timestamp_column="created"
    )
    push = PushSource(
        name=PUSH_SOURCE,
        batch_source=FileSource(
            path=str(pushed), timestamp_field="event_timestamp", created_timestamp_column="created"
        ),
    )
    # ttl 0: no age limit, as the project's training set without --max-age.
    view = FeatureView(
        name=VIEW, entities=[entity], ttl=timedelta(0), schema=schema, source=source, online=True
    )
    pushed_view = FeatureView(
        name=PUSH_VIEW, entities=[entity], ttl=timedelta(0), schema=schema, source=push
    )
    return [entity, view, pushed_view]


def store(repo: Path) -> Any:
    """A FeatureStore of the repository."""
    from feast import FeatureStore  # type: ignore[import-not-found,unused-ignore]

    return FeatureStore(repo_path=str(repo))


def cmd_setup(args: argparse.Namespace) -> dict[str, Any]:
    """Both repositories, applied; the online store loaded with each online entity's latest row."""
    for offline, repo in (("duckdb", args.repo), ("file", args.file_repo)):
        write_yaml(repo, offline, args.redis_port)
        store(repo).apply(objects(args.history, args.pushed))
    fs = store(args.repo)
    table = pq.read_table(args.online)
    began = time.perf_counter()
    for start in range(0, table.num_rows, 20_000):
        fs.write_to_online_store(VIEW, table.slice(start, 20_000).to_pandas())
    return {"online_rows": table.num_rows, "online_load_s": time.perf_counter() - began}


def cmd_training(args: argparse.Namespace) -> dict[str, Any]:
    """Spine file in, training set Parquet out; wall and CPU seconds of the whole job."""
    fs = store(args.repo)
    began, cpu = time.perf_counter(), time.process_time()
    spine = pq.read_table(args.spine).to_pandas()
    job = fs.get_historical_features(
        entity_df=spine.rename(columns={"timestamp": "event_timestamp"}),
        features=[f"{VIEW}:{f}" for f in FEATURES],
    )
    result = job.to_arrow()
    pq.write_table(result, args.output)
    return {
        "rows": result.num_rows,
        "seconds": time.perf_counter() - began,
        "cpu_seconds": time.process_time() - cpu,
    }


def cmd_online(args: argparse.Namespace) -> dict[str, Any]:
    """get_online_features in-process for `--entities` entities at a time, timed."""
    fs = store(args.repo)
    ids = json.loads(args.ids.read_text())
    refs = [f"{VIEW}:{f}" for f in FEATURES]
    samples = []
    first: dict[str, Any] = {}
    for i in range(args.warmup + args.samples):
        rows = [{"entity_id": e} for e in ids[i % len(ids)]]
        began = time.perf_counter()
        out = fs.get_online_features(features=refs, entity_rows=rows).to_dict()
        elapsed = (time.perf_counter() - began) * 1000
        if i >= args.warmup:
            samples.append(elapsed)
        if i == 0:
            first = out
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": cuts[49], "p99_ms": cuts[98], "samples": len(samples), "first": first}


def cmd_push(args: argparse.Namespace) -> dict[str, Any]:
    """Rows pushed to the online and offline stores in batches; events = rows x features."""
    from feast.data_source import PushMode  # type: ignore[import-not-found,unused-ignore]

    fs = store(args.repo)
    table = pq.read_table(args.events)
    began, cpu = time.perf_counter(), time.process_time()
    for start in range(0, table.num_rows, args.batch_rows):
        frame = table.slice(start, args.batch_rows).to_pandas()
        fs.push(PUSH_SOURCE, frame, to=PushMode.ONLINE_AND_OFFLINE)
        print(f"pushed {min(start + args.batch_rows, table.num_rows)}", file=sys.stderr)
    seconds = time.perf_counter() - began
    offline_rows = pq.read_metadata(args.pushed).num_rows
    return {
        "rows": table.num_rows,
        "events": table.num_rows * len(FEATURES),
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "offline_rows": offline_rows,
    }


def main() -> None:
    """Parse the sub-command, run it, print its JSON result as the last line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["setup", "training", "online", "push"])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--file-repo", type=Path)
    parser.add_argument("--redis-port", type=int, default=7480)
    parser.add_argument("--history", type=Path)
    parser.add_argument("--pushed", type=Path)
    parser.add_argument("--online", type=Path)
    parser.add_argument("--spine", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--ids", type=Path)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--events", type=Path)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args()
    commands = {
        "setup": cmd_setup,
        "training": cmd_training,
        "online": cmd_online,
        "push": cmd_push,
    }
    result = commands[args.command](args)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
