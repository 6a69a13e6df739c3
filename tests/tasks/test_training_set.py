"""Point-in-time training sets against a brute-force computation on random data."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bridge.producer import FileProducer
from featurestore import constants
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.query import query_table
from tests.helpers import wait_for_count

pytestmark = pytest.mark.integration

BASE = dt.datetime(2024, 6, 1)
FEATURES = ["f0", "f1", "f2"]
MAX_AGE = {"f1": dt.timedelta(hours=2)}


def brute_force(
    events: list[dict[str, Any]], entity: str, at: dt.datetime, feature: str
) -> float | None:
    """Latest value at or before `at`; ties: written last, then largest; None if too old."""
    candidates = [
        e
        for e in events
        if e["entity_id"] == entity and e["feature_name"] == feature and e["event_timestamp"] <= at
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda e: (e["event_timestamp"], e["created_at"], e["value"]))
    age = MAX_AGE.get(feature)
    if age is not None and at - best["event_timestamp"] > age:
        return None
    return float(best["value"])


def event(entity: str, feature: str, value: float, minute: int) -> dict[str, Any]:
    """One event as the producer's JSON lines carry it."""
    stamp = (BASE + dt.timedelta(minutes=minute)).isoformat()
    return {"entity_id": entity, "feature_name": feature, "value": value, "event_timestamp": stamp}


def sparse_events(rng: random.Random, entities: list[str]) -> list[dict[str, Any]]:
    """One feature per event: most (entity, time) pairs lack some features."""
    lines = []
    for _ in range(1500):
        entity = rng.choice(entities[:20])  # the last five entities have no events
        feature = rng.choice(FEATURES[:2] if entity.endswith("3") else FEATURES)
        minute = rng.randrange(0, 600, 5)  # coarse: many equal timestamps (ties)
        lines.append(event(entity, feature, rng.randrange(0, 50) / 2, minute))
    return lines


def complete_events(rng: random.Random, entities: list[str]) -> list[dict[str, Any]]:
    """Every feature at every (entity, time), as a pipeline writes features together (the
    build then needs no carrying forward), with some values sent again, changed (ties)."""
    lines = []
    for _ in range(150):  # sparse in time: some values are past f1's maximum age
        entity, minute = rng.choice(entities[:20]), rng.randrange(0, 600, 5)
        lines += [event(entity, f, rng.randrange(0, 50) / 2, minute) for f in FEATURES]
    lines += [{**e, "value": rng.randrange(0, 50) / 2} for e in rng.sample(lines, 60)]
    rng.shuffle(lines)
    return lines


@pytest.mark.parametrize("make_events", [sparse_events, complete_events])
def test_point_in_time_matches_brute_force(
    stack: Settings, tmp_path: Path, make_events: Any
) -> None:
    app = configure(stack)
    rng = random.Random(7)
    tag = f"p{uuid.uuid4().hex[:6]}_"
    entities = [f"{tag}{i}" for i in range(25)]
    lines = make_events(rng, entities)
    for part in range(3):  # three files, so ties also span batches written at other times
        path = tmp_path / f"events{part}.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines[part::3]) + b"\n")
        FileProducer(stack, rows_per_message=100).run([path])
        so_far = sum(len(lines[p::3]) for p in range(part + 1))
        assert wait_for_count(app, tag, so_far) == so_far
    stored = query_table(
        app,
        "SELECT entity_id, feature_name, value, event_timestamp, created_at FROM features "
        "WHERE starts_with(entity_id, ?)",
        [tag],
        timeout=60,
    ).to_pylist()
    assert len(stored) == len(lines)

    spine_rows = []
    for _ in range(400):
        minute = rng.randrange(-30, 700, 5)  # also before the first and after the last event
        spine_rows.append((rng.choice(entities), BASE + dt.timedelta(minutes=minute)))
    spine = tmp_path / "spine.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": [e for e, _t in spine_rows],
                "timestamp": pa.array([t for _e, t in spine_rows], pa.timestamp("us")),
                "label": [i % 2 for i in range(len(spine_rows))],
            }
        ),
        spine,
    )
    output = tmp_path / "out" / "training.parquet"
    report = app.send_task(
        constants.TASK_TRAINING_SET,
        args=[
            str(spine),
            FEATURES,
            {k: v.total_seconds() for k, v in MAX_AGE.items()},
            str(output),
        ],
        queue=stack.read_queue,
    ).get(timeout=120)
    assert report["rows"] == len(spine_rows)
    result = pq.read_table(output).to_pylist()
    assert [(r["entity_id"], r["timestamp"], r["label"]) for r in result] == [
        (e, t, i % 2) for i, (e, t) in enumerate(spine_rows)
    ]
    mismatches = [
        (row["entity_id"], row["timestamp"], feature, row[feature], expected)
        for row in result
        for feature in FEATURES
        if row[feature]
        != (expected := brute_force(stored, row["entity_id"], row["timestamp"], feature))
    ]
    assert mismatches == []
    values = [row[f] for row in result for f in FEATURES]
    assert any(v is None for v in values) and any(v is not None for v in values)


def test_output_may_not_land_in_the_state_folder(stack: Settings, tmp_path: Path) -> None:
    spine = tmp_path / "spine.csv"
    spine.write_text("entity_id,timestamp\ne1,2024-01-01\n")
    app = configure(stack)
    for output, reason in (
        (stack.duckdb_file, "the training set is written as a .parquet file"),
        (stack.state_dir / "x.parquet", "refusing to write inside"),
    ):
        result = app.send_task(
            constants.TASK_TRAINING_SET,
            args=[str(spine), ["f0"], {}, str(output)],
            queue=stack.read_queue,
        )
        with pytest.raises(Exception, match=reason):
            result.get(timeout=60)
