"""The in-process Reader: typed rows through the same guard and mapping as the Celery one."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore.errors import ReadOnlyError
from featurestore.reads.features import latest_features
from featurestore.store import merger
from featurestore.store.database import OffsetSpan, Store
from featurestore.store.local_reader import LocalReader


@dataclass(frozen=True)
class Row:
    entity_id: str
    value: float


def test_local_reader_maps_rows_and_keeps_the_guard(tmp_path: Path) -> None:
    store = Store(tmp_path / "features.duckdb")
    table = pa.table(
        {
            "entity_id": ["a", "a", "b"],
            "feature_name": ["x", "x", "x"],
            "value": [1.0, 2.0, 3.0],
            "event_timestamp": pa.array(
                [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 1)],
                pa.timestamp("us"),
            ),
        }
    )
    store.write_batch(table, pa.array([0, 1, 2], pa.int64()), OffsetSpan("features", 0, 0, 2))
    merger.merge(store.cursor())
    reader = LocalReader(store)
    rows = reader.query(
        "SELECT entity_id, value FROM features WHERE entity_id = ? ORDER BY value", ["a"], Row
    )
    assert rows == [Row("a", 1.0), Row("a", 2.0)]
    [latest] = latest_features(reader, "a")
    assert (latest.feature_name, latest.value) == ("x", 2.0)
    with pytest.raises(ReadOnlyError):
        reader.query_table("DELETE FROM features")
    store.close()
