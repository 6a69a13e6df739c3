"""Feature names a training set is asked for: an empty one (a trailing comma in
`--features a,b,`) is refused naming the list, and a name no spine row found a value of
(a typo, a space after a comma) is reported beside the set (no services needed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.errors import ValidationError
from featurestore.store import training
from tests.store.test_as_of import history

LINES = [
    {"entity_id": "c1", "feature_name": "age", "value": 41, "event_timestamp": "2024-01-01"},
    {"entity_id": "c2", "feature_name": "dti", "value": 0.3, "event_timestamp": "2024-01-01"},
]


def spine(tmp_path: Path) -> Path:
    path = tmp_path / "spine.parquet"
    stamp = pa.array([1_800_000_000_000_000] * 2, pa.timestamp("us"))  # in 2027
    pq.write_table(pa.table({"entity_id": ["c1", "c2"], "timestamp": stamp}), path)
    return path


def test_an_empty_feature_name_is_refused(tmp_path: Path) -> None:
    # It reached the COPY as a column named "": DuckDB's parser error, exit 1.
    request = training.TrainingRequest(spine(tmp_path), ["age", ""], tmp_path / "out.parquet")
    with pytest.raises(ValidationError, match=r"a feature name is empty: \['age', ''\]"):
        training.build(history(LINES).cursor(), request)


def test_features_no_row_has_a_value_of_are_reported(tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    request = training.TrainingRequest(spine(tmp_path), ["age", " dti", "dti", "nope"], output)
    report = training.build(history(LINES).cursor(), request, parts=1)
    assert report.rows == 2
    assert report.features_without_values == [" dti", "nope"]
    assert pq.read_table(output).column("dti").to_pylist() == [None, 0.3]
