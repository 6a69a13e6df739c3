"""The production naming rule and the matching of blobs to registry rows (no services)."""

from __future__ import annotations

import datetime as dt

import pytest

from featurestore.errors import ArtifactError
from featurestore.serving.artifacts import BlobRef, match, production_extension
from featurestore.store.registry import ModelRecord


@pytest.mark.parametrize(
    ("name", "extension"),
    [
        ("m/production.onnx", "onnx"),
        ("m/model_production.onnx", "onnx"),
        ("m/scaler-production.json", "json"),
        ("m/v2.production.onnx", "onnx"),
        ("m/Model_production.ONNX", "onnx"),
        ("m/reproduction.onnx", None),
        ("m/modelproduction.onnx", None),
        ("m/model_production", None),
        ("m/model_production.", None),
        ("m/model_production.onnx.bak", None),
        ("m/model_staging.onnx", None),
        ("m/model_production.on-nx", None),
        ("m/model_production.onnx\n", None),
        ("m/sub/model_production.onnx", None),
        ("m//model_production.onnx", None),
        ("/m/model_production.onnx", None),
        ("m/../model_production.onnx", None),
        ("../m/model_production.onnx", None),
        ("m/model..production.onnx", None),
        ("m\\model_production.onnx", None),
        ("m2/model_production.onnx", None),
        ("M/model_production.onnx", None),
    ],
)
def test_naming_rule(name: str, extension: str | None) -> None:
    assert production_extension(name, "m") == extension


def _row(artifact_type: str, container: str = "a") -> ModelRecord:
    return ModelRecord(
        model_id="m",
        artifact_type=artifact_type,
        version="1",
        azure_location=container,
        expected_features=[],
        status="production",
        registered_at=dt.datetime(2024, 1, 1),
    )


def _blob(name: str, container: str = "a") -> BlobRef:
    extension = name.rpartition(".")[2]
    return BlobRef(container, f"m/{name}", extension, f"etag-{name}", 10)


def test_rows_take_blobs_by_label_then_by_extension_kind() -> None:
    plan = match(
        [_row("model"), _row("preprocessor")],
        [_blob("weights_production.onnx"), _blob("preprocessor_production.json")],
    )
    assert {ext: (kind, ref.name) for ext, (kind, ref) in plan.items()} == {
        "onnx": ("model", "m/weights_production.onnx"),
        "json": ("preprocessor", "m/preprocessor_production.json"),
    }


def test_a_lone_row_takes_the_lone_blob_of_its_container() -> None:
    plan = match([_row("classifier", "b")], [_blob("production.onnx", "b")])
    assert plan["onnx"][0] == "classifier"


def test_a_row_without_a_blob_in_its_container_is_missing() -> None:
    with pytest.raises(ArtifactError) as caught:
        match([_row("model"), _row("scaler", "b")], [_blob("model_production.onnx")])
    assert caught.value.reason == "missing_artifact"
    assert "scaler (container b)" in str(caught.value)
    # The scaler blob is in another container than its row names.
    with pytest.raises(ArtifactError, match="scaler"):
        match(
            [_row("model"), _row("scaler", "b")],
            [_blob("model_production.onnx"), _blob("scaler_production.json", "a")],
        )


def test_two_blobs_of_one_extension_are_ambiguous_across_containers_too() -> None:
    with pytest.raises(ArtifactError) as caught:
        match(
            [_row("model"), _row("model2", "b")],
            [_blob("model_production.onnx"), _blob("model2_production.onnx", "b")],
        )
    assert caught.value.reason == "ambiguous"
    assert "a/m/model_production.onnx" in str(caught.value)
