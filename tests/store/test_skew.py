"""The skew report and the training set from the log, on a DuckDB file in this process,
against a brute-force computation in Python: random feature histories written in several
batches (ties on event_timestamp, rows written after a prediction), random predictions
served between the batches with values true, stale or unknown to the offline store."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.errors import ValidationError
from featurestore.ingest.predictions import PredictionRows, decode_batch, encode_record
from featurestore.store import skew, training
from featurestore.store.database import OffsetSpan, Store
from featurestore.store.local_reader import LocalReader

MODEL = "credit"
ENTITIES = [f"e{i}" for i in range(6)]
FEATURES = ["age", "debt", "income"]
DAY = dt.datetime(2024, 3, 1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "features.duckdb")
    yield store
    store.close()


def write_features(store: Store, rows: list[tuple[str, str, float, dt.datetime]]) -> dt.datetime:
    """One batch of feature rows; its created_at."""
    start = store.resume_offset("features", 0, 0)
    table = pa.table(
        {
            "entity_id": [r[0] for r in rows],
            "feature_name": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "event_timestamp": pa.array([r[3] for r in rows], pa.timestamp("us")),
        }
    )
    offsets = pa.array(range(start, start + len(rows)), pa.int64())
    store.write_batch(table, offsets, OffsetSpan("features", 0, start, start + len(rows) - 1))
    created = store.cursor().execute("SELECT max(created_at) FROM features").fetchall()[0][0]
    assert isinstance(created, dt.datetime)
    return created


def write_records(store: Store, records: list[dict[str, Any]]) -> None:
    """Prediction records through the bridge's parser and the writer, as the stack does."""
    start = store.resume_offset("predictions", 0, 0)
    rows = PredictionRows()
    for record in records:
        rows.append_record(orjson.loads(encode_record(record)))
    table, offsets = decode_batch(rows.encode(list(range(start, start + len(records)))))
    store.write_predictions(
        table, offsets, OffsetSpan("predictions", 0, start, start + len(records) - 1)
    )


def record(
    request_id: str, entity: str | None, served_at: dt.datetime, features: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "model_id": MODEL,
        "model_version": "1",
        "entity_id": entity,
        "served_at": served_at,
        "source": "predict" if entity else "infer",
        "features": features,
        "outputs": [{"name": "score", "values": [0.5], "labels": []}],
    }


def truth(
    history: list[tuple[str, str, float, dt.datetime, dt.datetime]],
    entity: str,
    feature: str,
    served_at: dt.datetime,
) -> float | None:
    """Brute force: latest event at or before served_at among rows written by then; ties
    on event time to the row written last, then the largest value."""
    known = [
        (ts, created, value)
        for e, f, value, ts, created in history
        if e == entity and f == feature and ts <= served_at and created <= served_at
    ]
    return max(known)[2] if known else None


def test_skew_report_matches_a_brute_force_computation(store: Store, tmp_path: Path) -> None:
    rng = random.Random(11)
    history: list[tuple[str, str, float, dt.datetime, dt.datetime]] = []
    records: list[dict[str, Any]] = []
    expected_rows: dict[tuple[str, str, str], tuple[float, float | None, float]] = {}
    for batch in range(4):
        rows = [
            (e, f, float(rng.randint(0, 5)), DAY + dt.timedelta(days=rng.randint(0, 3 + batch)))
            for e in ENTITIES
            for f in FEATURES
            if rng.random() < 0.7
        ]
        created = write_features(store, rows)
        history += [(*row, created) for row in rows]
        time.sleep(0.002)  # the next batch and the predictions get later write times
        served_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        for n in range(5):
            request_id = f"b{batch}-r{n}"
            entity = rng.choice([*ENTITIES, "unknown"])
            used = []
            for feature in FEATURES:
                true = truth(history, entity, feature, served_at)
                kind = rng.choice(["true", "true", "stale", "request"])
                value = true if kind == "true" and true is not None else float(rng.randint(0, 5))
                stamp = DAY + dt.timedelta(hours=rng.randint(0, 100))
                origin = "request" if kind == "request" else rng.choice(["online", "fallback"])
                used.append(
                    {
                        "name": feature,
                        "value": value,
                        "origin": origin,
                        "event_timestamp": None if origin == "request" else stamp,
                    }
                )
                if origin != "request":
                    staleness = (served_at - stamp) / dt.timedelta(seconds=1)
                    expected_rows[(request_id, entity, feature)] = (value, true, staleness)
            records.append(record(request_id, entity, served_at, used))
    # A row written after every prediction, with an old event time: never a truth for them.
    write_features(store, [(e, f, 99.0, DAY) for e in ENTITIES for f in FEATURES])
    records.append(
        record(
            "infer-1",
            None,
            served_at,
            [{"name": "age", "value": 1.0, "origin": "request", "event_timestamp": None}],
        )
    )
    write_records(store, records)

    built = skew.build(
        store.cursor(), skew.SkewRequest(MODEL, output_path=tmp_path / "rows.parquet")
    )
    read = skew.report(LocalReader(store), MODEL)
    assert read == built.features

    expected = []
    for feature in FEATURES:
        mine = [v for k, v in expected_rows.items() if k[2] == feature]
        differed = [served != true for served, true, _s in mine]
        known = [abs(served - true) for served, true, _s in mine if true is not None]
        ages = [s for _v, _t, s in mine]
        expected.append(
            skew.FeatureSkew(
                feature_name=feature,
                predictions=len(mine),
                differed=sum(differed),
                differed_share=sum(differed) / len(mine),
                no_truth=sum(true is None for _v, true, _s in mine),
                mean_abs_diff=float(np.mean(known)) if known else None,
                staleness_p50_s=float(np.percentile(ages, 50)),
                staleness_p99_s=float(np.percentile(ages, 99)),
            )
        )
    assert len(built.features) == len(expected)
    for got, want in zip(built.features, expected, strict=True):
        assert got.feature_name == want.feature_name
        assert (got.predictions, got.differed, got.no_truth) == (
            want.predictions,
            want.differed,
            want.no_truth,
        )
        assert got.differed_share == pytest.approx(want.differed_share, abs=1e-12)
        for field in ("mean_abs_diff", "staleness_p50_s", "staleness_p99_s"):
            # Interpolated quantiles: the same formula, rounded in another order.
            assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-12), field
    assert sum(w.differed for w in expected) > 0 and sum(w.no_truth for w in expected) > 0
    assert built.predictions == len({k[0] for k in expected_rows})

    rows = pq.read_table(tmp_path / "rows.parquet").to_pylist()
    assert len(rows) == built.rows == len(expected_rows)
    for row in rows:
        served, true, _s = expected_rows[(row["request_id"], row["entity_id"], row["feature_name"])]
        assert (row["served_value"], row["truth_value"]) == (served, true)
        assert row["differs"] == (served != true)


def test_skew_keeps_to_the_served_time_range(store: Store) -> None:
    created = write_features(store, [("e0", "age", 1.0, DAY)])
    later = created + dt.timedelta(seconds=10)
    write_records(
        store,
        [
            record(
                f"r{i}",
                "e0",
                later + dt.timedelta(minutes=i),
                [{"name": "age", "value": 2.0, "origin": "online", "event_timestamp": DAY}],
            )
            for i in range(4)
        ],
    )
    reader = LocalReader(store)
    since, until = later + dt.timedelta(minutes=1), later + dt.timedelta(minutes=3)
    (only,) = skew.report(reader, MODEL, since, until)
    assert (only.predictions, only.differed) == (2, 2)
    assert only.mean_abs_diff == 1.0
    assert skew.report(reader, "other") == []
    with pytest.raises(ValidationError, match="is not before"):
        skew.report(reader, MODEL, until, since)


def test_training_set_from_the_log_holds_the_values_as_served(store: Store, tmp_path: Path) -> None:
    base = dt.datetime(2024, 6, 1)
    used = [
        ("e0", base, {"age": 30.0, "debt": 0.5}),
        ("e0", base + dt.timedelta(hours=2), {"age": 31.0, "debt": 0.25}),
        ("e1", base + dt.timedelta(hours=1), {"age": 50.0, "debt": 0.75}),
    ]
    write_records(
        store,
        [
            record(
                f"r{i}",
                entity,
                at,
                [
                    {"name": name, "value": value, "origin": "online", "event_timestamp": base}
                    for name, value in values.items()
                ],
            )
            for i, (entity, at, values) in enumerate(used)
        ],
    )
    spine = tmp_path / "spine.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": ["e0", "e0", "e1", "e1", "e0"],
                "timestamp": [
                    base + dt.timedelta(hours=1),
                    base + dt.timedelta(hours=3),
                    base,
                    base + dt.timedelta(hours=1),
                    base - dt.timedelta(hours=1),
                ],
                "label": [0, 1, 0, 1, 1],
            }
        ),
        spine,
    )
    output = tmp_path / "train.parquet"
    report = training.build_from_log(
        store.cursor(), training.LogTrainingRequest(spine, MODEL, output)
    )
    assert (report.rows, report.matched, report.features) == (5, 3, ["age", "debt"])
    got = pq.read_table(output).to_pylist()
    assert [(r["request_id"], r["label"], r["age"], r["debt"]) for r in got] == [
        ("r0", 0, 30.0, 0.5),
        ("r1", 1, 31.0, 0.25),
        (None, 0, None, None),
        ("r2", 1, 50.0, 0.75),
        (None, 1, None, None),
    ]
    with pytest.raises(ValidationError, match="no logged predictions"):
        training.build_from_log(store.cursor(), training.LogTrainingRequest(spine, "other", output))
