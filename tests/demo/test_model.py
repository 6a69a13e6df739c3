"""The demo's data, export and in-process scoring, without services."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest

from demo import data, model
from featurestore.ingest.sources import FileSource


@pytest.fixture(scope="module")
def credit() -> data.CreditData:
    return data.generate(400, seed=3, prefix="t_")


def test_generated_features_have_their_declared_types(credit: data.CreditData) -> None:
    assert credit.features.shape == (400, len(data.FEATURES))
    for feature in data.FEATURES:
        column = credit.features[:, feature.index]
        if feature.type in ("int", "bool"):
            assert np.array_equal(column, np.round(column)), feature.name
        if feature.type == "bool":
            assert set(np.unique(column)) == {0.0, 1.0}
    age = credit.features[:, data.FEATURE_NAMES.index("age_years")]
    assert age.min() >= 18
    assert 0 < credit.labels.mean() < 1


def test_same_seed_same_data_other_seed_other_data(credit: data.CreditData) -> None:
    assert np.array_equal(data.generate(400, seed=3, prefix="t_").features, credit.features)
    assert not np.array_equal(data.generate(400, seed=4, prefix="t_").features, credit.features)


def test_too_few_entities_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        data.generate(5)


def test_export_gives_label_and_probabilities_and_the_fitted_scaler(
    credit: data.CreditData,
) -> None:
    pipeline = model.train(credit)
    artifacts = model.export(pipeline)
    graph = onnx.load_from_string(artifacts.onnx).graph
    assert [o.name for o in graph.output] == ["label", "probabilities"]
    width = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    assert width == len(data.FEATURES)
    scaler = orjson.loads(artifacts.scaler_json)
    fitted = pipeline.named_steps["scaler"]
    assert scaler == {"mean": list(fitted.mean_), "scale": list(fitted.scale_)}


def test_in_process_onnx_scores_equal_sklearn(credit: data.CreditData) -> None:
    pipeline = model.train(credit)
    in_process = model.InProcessModel(model.export(pipeline))
    ours = in_process.scores(credit.features)
    theirs = model.sklearn_scores(pipeline, credit.features)
    assert np.max(np.abs(ours - theirs)) < 1e-5
    # Without the scaler the ONNX graph alone scores differently: the scaler is not inside.
    raw = in_process.session.run(None, {in_process.input_name: credit.features.astype("f4")})
    assert np.max(np.abs(raw[1][:, 1] - theirs)) > 1e-2


def test_parquet_passes_the_producer_validation_unchanged(
    credit: data.CreditData, tmp_path: Path
) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    path = tmp_path / "f.parquet"
    assert data.write_parquet(credit, path, when) == 400 * len(data.FEATURES)
    source = FileSource(path, 1000)
    try:
        assert source.counts() == (400 * len(data.FEATURES), 0)
        events = [e for m in source.messages() for e in orjson.loads(m.payload)]
    finally:
        source.close()
    by_key = {(e["entity_id"], e["feature_name"]): e for e in events}
    for row, entity in enumerate(credit.entity_ids[:50]):
        for feature in data.FEATURES:
            event = by_key[(entity, feature.name)]
            assert event["value"] == credit.features[row, feature.index]
            assert event["event_timestamp"] == "2026-01-02T03:04:05.000000Z"
